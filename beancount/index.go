package beancount

import (
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/favaproxy/favaproxy/checksum"
)

// DefaultMetaKey is the metadata key IndexOptions.MetaKey defaults to.
const DefaultMetaKey = "idempotency-key"

// IndexOptions configure an Index.
type IndexOptions struct {
	// MetaKey is the metadata key whose values MetaValue looks up. Empty
	// means DefaultMetaKey.
	MetaKey string
}

// Occurrence is where a directive sits.
type Occurrence struct {
	File          string
	Line, EndLine int
	Kind          Kind
	Date          string
}

// Index answers questions about a ledger's files quickly. Refresh brings it
// up to date with the files on disk, rescanning only what changed; all other
// methods read the state of the last Refresh and may run concurrently with
// each other and with Refresh.
type Index struct {
	main    string
	metaKey string

	// refreshMu serializes Refresh; it guards no fields.
	refreshMu sync.Mutex
	// snap is the state after the last Refresh; a snapshot is never
	// modified once published.
	snap atomic.Pointer[snapshot]

	// fullScans and appendScans count how files were read, for tests.
	fullScans, appendScans atomic.Int64
}

type snapshot struct {
	ledger *Ledger
	files  []*fileIndex // in ledger order
	byPath map[string]*fileIndex
}

// NewIndex returns an index of the ledger whose main file is main. It is
// empty until the first Refresh.
func NewIndex(main string, o IndexOptions) *Index {
	if o.MetaKey == "" {
		o.MetaKey = DefaultMetaKey
	}
	ix := &Index{main: main, metaKey: o.MetaKey}
	ix.snap.Store(&snapshot{ledger: &Ledger{Main: main, Options: map[string][]string{}}, byPath: map[string]*fileIndex{}})
	return ix
}

// Refresh re-reads the ledger: it re-runs include discovery, stats every
// file and rescans those whose size, modification time or inode changed (or
// whose content changed while those stayed the same, for files modified
// around the time they were last read). When a file only grew and its old
// end is unchanged, only the appended part is scanned. Only one Refresh runs
// at a time.
func (ix *Index) Refresh() error {
	ix.refreshMu.Lock()
	defer ix.refreshMu.Unlock()
	old := ix.snap.Load()
	next := &snapshot{byPath: map[string]*fileIndex{}}
	ledger, err := discover(ix.main, func(path string) (*fileFacts, error) {
		f, err := ix.refreshFile(old.byPath[path], path)
		if err != nil {
			return nil, err
		}
		next.byPath[path] = f
		next.files = append(next.files, f)
		return f.facts(), nil
	})
	if err != nil {
		return fmt.Errorf("refresh index: %w", err)
	}
	next.ledger = ledger
	ix.snap.Store(next)
	return nil
}

// Ledger returns the files, title and slug found by the last Refresh.
func (ix *Index) Ledger() *Ledger { return ix.snap.Load().ledger }

// File returns the identity, checksum and blocks of one file of the ledger
// as of the last Refresh.
func (ix *Index) File(path string) (File, bool) {
	f := ix.snap.Load().byPath[path]
	if f == nil {
		return File{}, false
	}
	return File{Path: f.path, Size: f.id.size, ModTime: f.id.mtime, Sum: f.sum, Blocks: f.blocks()}, true
}

// Link returns the transactions (and documents) carrying ^link.
func (ix *Index) Link(link string) []Occurrence {
	return ix.lookup(func(p *part) []int32 { return p.links[link] })
}

// MetaValue returns the directives whose own metadata under the index's
// MetaKey has the value value.
func (ix *Index) MetaValue(value string) []Occurrence {
	return ix.lookup(func(p *part) []int32 { return p.meta[value] })
}

// SliceSum returns the directives whose Fava slice has checksum sum
// (checksum.String of the slice text).
func (ix *Index) SliceSum(sum string) []Occurrence {
	var key [32]byte
	if n, err := hex.Decode(key[:], []byte(sum)); err != nil || n != 32 {
		return nil
	}
	return ix.lookup(func(p *part) []int32 { return p.sliceSums()[key] })
}

// Opened reports whether account has an open directive (closed or not).
func (ix *Index) Opened(account string) bool {
	return len(ix.lookup(func(p *part) []int32 { return p.opens[account] })) > 0
}

// Closed reports whether account has a close directive.
func (ix *Index) Closed(account string) bool {
	return len(ix.lookup(func(p *part) []int32 { return p.closes[account] })) > 0
}

// Accounts returns, sorted, the accounts that are opened and not closed.
// Opened also reports closed accounts, because Beancount refuses to open an
// account twice.
func (ix *Index) Accounts() []string {
	s := ix.snap.Load()
	open := map[string]bool{}
	closed := map[string]bool{}
	for _, f := range s.files {
		f.each(func(b *Block) {
			switch b.Kind {
			case KindOpen:
				for _, a := range b.Accounts {
					open[a] = true
				}
			case KindClose:
				for _, a := range b.Accounts {
					closed[a] = true
				}
			}
		}, func(p *part) []int32 { return p.openClose })
	}
	out := make([]string, 0, len(open))
	for a := range open {
		if !closed[a] {
			out = append(out, a)
		}
	}
	sort.Strings(out)
	return out
}

// LastOpen returns the EndLine of the last open directive in file.
func (ix *Index) LastOpen(file string) (line int, ok bool) {
	f := ix.snap.Load().byPath[file]
	if f == nil {
		return 0, false
	}
	f.each(func(b *Block) {
		if b.Kind == KindOpen && b.EndLine > line {
			line, ok = b.EndLine, true
		}
	}, func(p *part) []int32 { return p.openClose })
	return line, ok
}

// Blocks returns a copy of the blocks of file as of the last Refresh.
func (ix *Index) Blocks(file string) []Block {
	f := ix.snap.Load().byPath[file]
	if f == nil {
		return nil
	}
	return f.blocks()
}

// Any reports whether some block of file, as of the last Refresh, matches
// match. It copies nothing.
func (ix *Index) Any(file string, match func(*Block) bool) bool {
	f := ix.snap.Load().byPath[file]
	if f == nil {
		return false
	}
	for _, p := range f.parts() {
		for i := range p.blocks[:p.n] {
			if match(&p.blocks[i]) {
				return true
			}
		}
	}
	return false
}

// Transactions calls fn for every transaction of the ledger, file by file in
// ledger order, until fn returns false.
func (ix *Index) Transactions(fn func(file string, b Block) bool) {
	for _, f := range ix.snap.Load().files {
		for _, p := range f.parts() {
			for i := range p.n {
				if b := &p.blocks[i]; b.Kind == KindTransaction {
					if !fn(f.path, *b) {
						return
					}
				}
			}
		}
	}
}

func (ix *Index) lookup(get func(p *part) []int32) []Occurrence {
	var out []Occurrence
	for _, f := range ix.snap.Load().files {
		f.each(func(b *Block) {
			out = append(out, Occurrence{File: f.path, Line: b.Line, EndLine: b.EndLine, Kind: b.Kind, Date: b.Date})
		}, get)
	}
	return out
}

// identity is what tells a file's versions apart without reading it.
type identity struct {
	size     int64
	mtime    time.Time
	dev, ino uint64
}

// tailSize is how much of a file's end is kept to check that an append left
// the old content alone.
const tailSize = 4096

// racy reports whether a file modified at mtime and read at readAt may
// change again without its identity changing, so that its content has to
// be compared next time. File systems with nanosecond timestamps take them
// from a coarse clock (a few milliseconds); a whole-second timestamp
// suggests a file system that keeps seconds or two.
func racy(mtime, readAt time.Time) bool {
	window := 50 * time.Millisecond
	if mtime.Nanosecond() == 0 {
		window = 2 * time.Second
	}
	return !mtime.Before(readAt.Add(-window))
}

// fileIndex is the immutable index of one version of a file: a base part
// from a full scan, of which the first baseN blocks are current, and a
// delta part from scans of appended content.
type fileIndex struct {
	path string
	id   identity
	sum  string
	// hash is the marshaled SHA-256 state after the normalized content.
	hash []byte
	// tail is the file's last bytes, up to tailSize.
	tail []byte
	// racy: the file was modified around the time it was read.
	racy bool
	// unterminated: a quote without a closing quote, which appended
	// content could close; appends are then scanned in full.
	unterminated bool

	base  *part
	delta *part // may be nil
	// restart is where a scan of appended content starts: the start of the
	// last block (or 0), its line, and the pushed tags in effect there.
	restartOff, restartLine int
	restartTags             []string
}

// part is an immutable run of blocks with maps from keys to block indexes.
type part struct {
	blocks  []Block
	n       int    // blocks in effect: a base part loses its last block to a delta
	text    string // the scanned source; block Offsets are relative to textOff
	textOff int

	links, meta, opens, closes map[string][]int32
	openClose, incOpt          []int32

	// sc holds the slice checksums, computed on first use and shared
	// with the parts cut from this one.
	sc *sumCache
}

// sumCache maps the slice checksums of a part's blocks to block indexes.
type sumCache struct {
	once sync.Once
	sums map[[32]byte][]int32
}

func newPart(blocks []Block, text string, textOff int, metaKey string) *part {
	p := &part{blocks: blocks, n: len(blocks), text: text, textOff: textOff, sc: &sumCache{},
		links: map[string][]int32{}, meta: map[string][]int32{}, opens: map[string][]int32{}, closes: map[string][]int32{}}
	for i := range blocks {
		b := &blocks[i]
		for _, l := range b.Links {
			p.links[l] = append(p.links[l], int32(i))
		}
		for _, m := range b.Meta {
			if m.Key == metaKey && b.Kind != KindPushmeta && b.Kind != KindPopmeta {
				p.meta[m.Value] = append(p.meta[m.Value], int32(i))
			}
		}
		switch b.Kind {
		case KindOpen:
			p.openClose = append(p.openClose, int32(i))
			for _, a := range b.Accounts {
				p.opens[a] = append(p.opens[a], int32(i))
			}
		case KindClose:
			p.openClose = append(p.openClose, int32(i))
			for _, a := range b.Accounts {
				p.closes[a] = append(p.closes[a], int32(i))
			}
		case KindInclude, KindOption:
			p.incOpt = append(p.incOpt, int32(i))
		}
	}
	return p
}

// cut returns a copy of p's header with only its first n blocks in effect;
// maps are shared and lookups filter by n.
func (p *part) cut(n int) *part {
	c := *p
	c.n = n
	return &c
}

// sliceSums returns the map from slice checksum to blocks, computing it on
// first use.
func (p *part) sliceSums() map[[32]byte][]int32 {
	p.sc.once.Do(func() {
		p.sc.sums = make(map[[32]byte][]int32, len(p.blocks))
		var buf []byte
		for i := range p.blocks {
			b := &p.blocks[i]
			buf = sliceText(buf[:0], p.text, b.Offset-p.textOff, b.EndLine-b.Line+1)
			k := sha256.Sum256(buf)
			p.sc.sums[k] = append(p.sc.sums[k], int32(i))
		}
	})
	return p.sc.sums
}

// sliceText appends to dst the normalized text of n lines of text starting
// at off, without trailing newlines: Fava's slice.
func sliceText(dst []byte, text string, off, n int) []byte {
	p := off
	for ; n > 0 && p < len(text); n-- {
		for p < len(text) && text[p] != '\n' && text[p] != '\r' {
			p++
		}
		if p < len(text) {
			if text[p] == '\r' && p+1 < len(text) && text[p+1] == '\n' {
				p++
			}
			p++
		}
	}
	if off > len(text) {
		off = len(text)
	}
	dst = append(dst, checksum.Normalize([]byte(text[off:p]))...)
	for len(dst) > 0 && dst[len(dst)-1] == '\n' {
		dst = dst[:len(dst)-1]
	}
	return dst
}

func (f *fileIndex) parts() []*part {
	if f.delta == nil {
		return []*part{f.base}
	}
	return []*part{f.base, f.delta}
}

// each calls fn for the blocks in effect that get lists, in file order.
func (f *fileIndex) each(fn func(b *Block), get func(p *part) []int32) {
	for _, p := range f.parts() {
		for _, i := range get(p) {
			if int(i) < p.n {
				fn(&p.blocks[i])
			}
		}
	}
}

func (f *fileIndex) blocks() []Block {
	out := make([]Block, 0, f.base.n+f.deltaN())
	for _, p := range f.parts() {
		out = append(out, p.blocks[:p.n]...)
	}
	return out
}

func (f *fileIndex) deltaN() int {
	if f.delta == nil {
		return 0
	}
	return f.delta.n
}

func (f *fileIndex) facts() *fileFacts {
	facts := &fileFacts{}
	f.each(facts.add, func(p *part) []int32 { return p.incOpt })
	return facts
}

// errChanged: the file changed while it was read.
var errChanged = errors.New("file changed while read")

// refreshFile returns the index of the file at path, reusing old (the
// previous version, or nil) as far as the file allows.
func (ix *Index) refreshFile(old *fileIndex, path string) (*fileIndex, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s is a directory", path)
	}
	id := identityOf(fi)
	now := time.Now()
	if old != nil && old.id == id {
		if !old.racy {
			return old, nil
		}
		// Modified around the time it was read: compare the content,
		// which costs a read and a hash but no scan when it is the same.
		src, err := readAll(fh, make([]byte, 0, id.size+512))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if int64(len(src)) == id.size && checksum.File(src) == old.sum {
			o := *old
			o.racy = racy(id.mtime, now)
			return &o, nil
		}
		if _, err := fh.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
	}
	if old != nil && old.id.dev == id.dev && old.id.ino == id.ino && id.size > old.id.size && !old.unterminated {
		f, err := ix.appendScan(old, fh, id, now)
		if err == nil {
			ix.appendScans.Add(1)
			return f, nil
		}
		// The old content changed too: fall through to a full scan.
	}
	f, err := ix.fullScan(fh, path, id, now)
	if err != nil {
		return nil, err
	}
	ix.fullScans.Add(1)
	if old != nil && old.sum == f.sum {
		// Same content: keep the old index (and its computed sums).
		o := *old
		o.id, o.racy = f.id, f.racy
		return &o, nil
	}
	return f, nil
}

func (ix *Index) fullScan(fh *os.File, path string, id identity, now time.Time) (*fileIndex, error) {
	src := make([]byte, 0, id.size+512)
	src, err := readAll(fh, src)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(src)) != id.size {
		// Written while read; record what was read, and compare next time.
		id.size = int64(len(src))
		id.mtime = time.Time{}
	}
	s := scanWhole(src, owned(src))
	f := &fileIndex{path: path, id: id, racy: racy(id.mtime, now), unterminated: s.noClose >= 0}
	h := sha256.New()
	h.Write(checksum.Normalize(src))
	f.setHash(h)
	f.tail = bytes.Clone(src[max(0, len(src)-tailSize):])
	f.base = newPart(s.blocks, s.str, 0, ix.metaKey)
	f.setRestart(s, 0, 1, nil)
	return f, nil
}

// setRestart records where to resume after the blocks of s, a scan that
// started at off and line with tags.
func (f *fileIndex) setRestart(s *scanner, off, line int, tags []string) {
	if n := len(s.blocks); n > 0 {
		last := &s.blocks[n-1]
		f.restartOff, f.restartLine = last.Offset, last.Line
		f.restartTags = s.tags
		if s.prevTagsBlock == n-1 {
			f.restartTags = s.prevTags
		}
		return
	}
	f.restartOff, f.restartLine, f.restartTags = off, line, tags
}

func (f *fileIndex) setHash(h interface {
	io.Writer
	Sum([]byte) []byte
}) {
	f.sum = hex.EncodeToString(h.Sum(nil))
	if m, ok := h.(encoding.BinaryMarshaler); ok {
		f.hash, _ = m.MarshalBinary()
	}
}

// appendScan indexes a file that grew from old, scanning only from the
// start of old's last block. It fails when the old content's end changed.
func (ix *Index) appendScan(old *fileIndex, fh *os.File, id identity, now time.Time) (*fileIndex, error) {
	oldSize := old.id.size
	if len(old.tail) > 0 && old.tail[len(old.tail)-1] == '\r' || old.hash == nil {
		return nil, errChanged // a CR may pair with an appended LF
	}
	from := min(int64(old.restartOff), oldSize-int64(len(old.tail)))
	buf := make([]byte, id.size-from)
	n, err := fh.ReadAt(buf, from)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	buf = buf[:n]
	tailAt := oldSize - int64(len(old.tail)) - from
	if int64(len(buf)) < oldSize-from || !bytes.Equal(buf[tailAt:tailAt+int64(len(old.tail))], old.tail) {
		return nil, errChanged
	}
	if int64(n) != id.size-from {
		id.size = from + int64(n)
		id.mtime = time.Time{}
	}
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(old.hash); err != nil {
		return nil, err
	}
	h.Write(checksum.Normalize(buf[oldSize-from:]))

	scanSrc := buf[int64(old.restartOff)-from:]
	s := newScanner(scanSrc, owned(scanSrc), old.restartOff, old.restartLine, old.restartTags)
	s.run()
	f := &fileIndex{path: old.path, id: id, racy: racy(id.mtime, now), unterminated: s.noClose >= 0}
	f.setHash(h)
	f.tail = bytes.Clone(buf[max(0, len(buf)-tailSize):])
	// Blocks from restartOff on are replaced by the new scan. A base
	// part's text always starts at offset 0 and reaches restartOff.
	base, delta := old.base, old.delta
	var kept []Block
	if delta != nil && old.restartOff >= delta.textOff {
		kept = delta.blocks[:delta.n]
		for len(kept) > 0 && kept[len(kept)-1].Offset >= old.restartOff {
			kept = kept[:len(kept)-1]
		}
	} else {
		n := base.n
		for n > 0 && base.blocks[n-1].Offset >= old.restartOff {
			n--
		}
		if n != base.n {
			base = base.cut(n)
		}
		delta = nil
	}
	// Text before restartOff not in base.
	var mid string
	midOff := old.restartOff
	if delta != nil {
		mid, midOff = delta.text[:old.restartOff-delta.textOff], delta.textOff
	}
	if len(kept)+len(s.blocks) > deltaLimit(base.n) {
		// Fold everything into a new base, so that the delta, rebuilt on
		// every append, stays small.
		all := slices.Concat(base.blocks[:base.n], kept, s.blocks)
		text := base.text[:midOff] + mid + s.str
		f.base, f.delta = newPart(all, text, 0, ix.metaKey), nil
	} else {
		f.base = base
		f.delta = newPart(slices.Concat(kept, s.blocks), mid+s.str, midOff, ix.metaKey)
	}
	f.setRestart(s, old.restartOff, old.restartLine, old.restartTags)
	return f, nil
}

// deltaLimit is how many blocks a delta part over a base of n blocks may
// hold before it is folded into the base: about 2√n, at least 256. Each
// append rebuilds the delta, each fold the base; this keeps both cheap.
func deltaLimit(n int) int {
	return max(256, 2*int(math.Sqrt(float64(n))))
}

func readAll(r io.Reader, b []byte) ([]byte, error) {
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				return b, nil
			}
			return b, err
		}
	}
}
