package journal

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// TestBoundedKeysAnswerAsTheFile: with a memory of four keys and a filter
// of 64 bits (so keys are evicted and the filter errs all the time),
// Lookup and Latest answer exactly what the file holds, while two Journals
// on one file append, as two processes do.
func TestBoundedKeysAnswerAsTheFile(t *testing.T) {
	dir := t.TempDir()
	o := Options{MaxKeys: 4, FilterBits: 64}
	a, err := OpenWith(dir, "main.beancount", o)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := OpenWith(dir, "main.beancount", o)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	rnd := rand.New(rand.NewPCG(1, 2))
	outcomes := []string{OutcomeOK, OutcomeError, OutcomeReplayed, OutcomeUnknown}
	var all []Record // every record appended, in order
	ref := func(key string, first bool) (string, bool) {
		found := ""
		for _, r := range all {
			if r.Key != key {
				continue
			}
			if first {
				if r.Outcome == OutcomeOK {
					return r.RequestID, true
				}
				continue
			}
			found = r.RequestID
		}
		return found, found != ""
	}
	for i := range 3000 {
		j := []*Journal{a, b}[rnd.IntN(2)]
		key := fmt.Sprintf("k%d", rnd.IntN(40))
		switch rnd.IntN(3) {
		case 0:
			r := Record{RequestID: fmt.Sprint("r", i), Key: key, Outcome: outcomes[rnd.IntN(len(outcomes))], User: "u", Ledger: "l", Route: "add_entries", Kind: "add_entries"}
			if err := j.Append(r); err != nil {
				t.Fatal(err)
			}
			all = append(all, r)
		case 1:
			got, ok, err := j.Lookup(key)
			want, wok := ref(key, true)
			if err != nil || ok != wok || got.RequestID != want {
				t.Fatalf("step %d: Lookup(%s) = %q %v %v, want %q %v", i, key, got.RequestID, ok, err, want, wok)
			}
		default:
			got, ok, err := j.Latest(key)
			want, wok := ref(key, false)
			if err != nil || ok != wok || got.RequestID != want {
				t.Fatalf("step %d: Latest(%s) = %q %v %v, want %q %v", i, key, got.RequestID, ok, err, want, wok)
			}
		}
	}
}

// TestKeyMemoryIsBounded: 20,000 keys with 500-byte replies. The journal
// keeps no reply in memory, and with MaxKeys 1,000 its heap stays a small
// fraction of what it holds when nothing is evicted (the control: the
// bound is what keeps it small).
func TestKeyMemoryIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 10 MB")
	}
	dir := t.TempDir()
	const keys = 20000
	w, err := Open(dir, "main.beancount")
	if err != nil {
		t.Fatal(err)
	}
	reply := []byte(`{"data":"` + strings.Repeat("x", 500) + `"}`)
	batch := make([]Record, 0, 1000)
	for i := range keys {
		batch = append(batch, Record{Key: fmt.Sprintf("key-%06d", i), Outcome: OutcomeOK, Reply: reply, User: "u"})
		if len(batch) == cap(batch) {
			if err := w.AppendBatch(batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	w.Close()
	heap := func(o Options) uint64 {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		j, err := OpenWith(dir, "main.beancount", o)
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		if _, ok, err := j.Lookup("key-000001"); err != nil || !ok {
			t.Fatalf("lookup: %v %v", ok, err)
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(j)
		return after.HeapInuse - min(after.HeapInuse, before.HeapInuse)
	}
	bounded := heap(Options{MaxKeys: 1000, FilterBits: 1 << 16})
	unbounded := heap(Options{MaxKeys: 1 << 30, FilterBits: 1 << 16})
	t.Logf("heap after reading %d keys: %d KiB with MaxKeys 1000, %d KiB with no eviction (file %d KiB of replies)",
		keys, bounded>>10, unbounded>>10, keys*len(reply)>>10)
	if bounded > 2<<20 {
		t.Errorf("heap with MaxKeys 1000 = %d KiB, want under 2 MiB", bounded>>10)
	}
	if unbounded < 3*bounded {
		t.Errorf("without eviction the heap is %d KiB, not well above the bounded %d KiB: the test cannot see the bound", unbounded>>10, bounded>>10)
	}
}

// BenchmarkLookup: a key in memory, a key never seen (the filter answers),
// and an evicted key (a scan of the file), on a journal of 20,000 keys.
func BenchmarkLookup(b *testing.B) {
	dir := b.TempDir()
	w, err := Open(dir, "main.beancount")
	if err != nil {
		b.Fatal(err)
	}
	var recs []Record
	for i := range 20000 {
		recs = append(recs, Record{Key: fmt.Sprintf("key-%06d", i), Outcome: OutcomeOK, User: "u"})
	}
	if err := w.AppendBatch(recs); err != nil {
		b.Fatal(err)
	}
	w.Close()
	j, err := OpenWith(dir, "main.beancount", Options{MaxKeys: 1000})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	for _, tc := range []struct{ name, key string }{
		{"Remembered", "key-019999"}, {"NeverSeen", "other"}, {"Evicted", "key-000000"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				if tc.name == "Evicted" {
					j.mu.Lock()
					delete(j.keys.m, tc.key) // evicted again each time
					j.mu.Unlock()
				}
				if _, _, err := j.Lookup(tc.key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
