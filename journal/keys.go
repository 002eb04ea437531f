package journal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"hash/maphash"
	"io"
)

// The journal's memory of idempotency keys.
//
// The file is the truth; memory only makes lookups cheap, within bounds.
// For at most Options.MaxKeys keys (the latest added) it keeps where in the
// file their first ok record and their latest record are — two offsets, no
// record bodies — and reads a record back when it is asked for. Every key
// ever seen also goes into a Bloom filter of Options.FilterBits bits. A key
// in neither is answered "not found" with no I/O: most lookups are of keys
// never used. A key the filter may have seen but memory no longer holds (it
// was evicted, or the filter errs) costs one scan of the file, and is then
// remembered again.

// Defaults of Options.
const (
	DefaultMaxKeys    = 1 << 14 // 16,384 keys: 2-4 MiB, minutes of writes at the highest rate measured
	DefaultFilterBits = 1 << 23 // 1 MiB: about 2% false positives at a million keys
	filterHashes      = 4
)

// Options bound a Journal's memory. Zero fields mean their defaults.
type Options struct {
	// MaxKeys is the most idempotency keys whose record offsets are kept
	// in memory. Zero means DefaultMaxKeys.
	MaxKeys int
	// FilterBits is the size of the filter of keys ever seen, in bits.
	// Zero means DefaultFilterBits.
	FilterBits int
}

// span is where one record's line is in the file.
type span struct {
	off int64
	n   int32
}

// keyState is where a key's records are: its first answer record (ok or
// refused; n == 0 for none) and its latest record.
type keyState struct {
	answer, latest span
}

// keyIndex maps keys to where their records are, bounded.
type keyIndex struct {
	max   int
	m     map[string]*keyState
	order []string // keys in the order they were added; a ring
	next  int      // the oldest key's slot in order, once it is full
	seen  bloom
}

func newKeyIndex(o Options) *keyIndex {
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	if o.FilterBits <= 0 {
		o.FilterBits = DefaultFilterBits
	}
	return &keyIndex{max: o.MaxKeys, m: map[string]*keyState{}, seen: newBloom(o.FilterBits)}
}

// note records a line at sp with key and outcome, read in file order.
func (x *keyIndex) note(key, outcome string, sp span) {
	s := x.m[key]
	if s == nil {
		if x.seen.has(key) {
			// Seen before and evicted (or the filter errs): its earlier
			// records are not known here, so a lookup scans the file.
			return
		}
		x.seen.add(key)
		s = &keyState{}
		x.put(key, s)
	}
	s.latest = sp
	if s.answer.n == 0 && isAnswer(outcome) {
		s.answer = sp
	}
}

// put adds key, evicting the oldest key when the index is full.
func (x *keyIndex) put(key string, s *keyState) {
	if len(x.order) < x.max {
		x.order = append(x.order, key)
	} else {
		delete(x.m, x.order[x.next])
		x.order[x.next] = key
		x.next = (x.next + 1) % x.max
	}
	x.m[key] = s
}

// state returns where key's records are: from memory, or by scanning the
// first size bytes of r when the filter says the key may be there. nil
// when the key has no record.
func (x *keyIndex) state(r io.ReaderAt, size int64, key string) (*keyState, error) {
	if s := x.m[key]; s != nil {
		return s, nil
	}
	if !x.seen.has(key) {
		return nil, nil
	}
	s, err := scanKey(r, size, key)
	if err != nil || s == nil {
		return nil, err
	}
	x.put(key, s)
	return s, nil
}

// scanKey reads the first size bytes of r for the records of key.
func scanKey(r io.ReaderAt, size int64, key string) (*keyState, error) {
	needle, _ := json.Marshal(key)
	needle = append([]byte(`"key":`), needle...)
	br := bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 64<<10)
	var s *keyState
	for off := int64(0); ; {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			return s, nil
		}
		if err != nil {
			return nil, err
		}
		sp := span{off: off, n: int32(len(line))}
		off += int64(len(line))
		if !bytes.Contains(line, needle) {
			continue
		}
		rec, ok := parseLine(line)
		if !ok || rec.Key != key {
			continue
		}
		if s == nil {
			s = &keyState{}
		}
		s.latest = sp
		if s.answer.n == 0 && isAnswer(rec.Outcome) {
			s.answer = sp
		}
	}
}

// readRecord reads the record at sp.
func readRecord(r io.ReaderAt, sp span) (Record, error) {
	buf := make([]byte, sp.n)
	if _, err := r.ReadAt(buf, sp.off); err != nil {
		return Record{}, err
	}
	rec, ok := parseLine(buf)
	if !ok {
		return Record{}, errMoved
	}
	return rec, nil
}

// bloom is a Bloom filter of strings.
type bloom struct {
	bits []uint64
	seed maphash.Seed
}

func newBloom(n int) bloom {
	return bloom{bits: make([]uint64, (n+63)/64), seed: maphash.MakeSeed()}
}

func (b *bloom) positions(key string, fn func(i uint64) bool) bool {
	h := maphash.String(b.seed, key)
	h1, h2 := h, h>>32|h<<32|1
	m := uint64(len(b.bits) * 64)
	for i := range uint64(filterHashes) {
		if !fn((h1 + i*h2) % m) {
			return false
		}
	}
	return true
}

func (b *bloom) add(key string) {
	b.positions(key, func(i uint64) bool { b.bits[i/64] |= 1 << (i % 64); return true })
}

func (b *bloom) has(key string) bool {
	return b.positions(key, func(i uint64) bool { return b.bits[i/64]&(1<<(i%64)) != 0 })
}
