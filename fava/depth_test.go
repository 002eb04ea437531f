package fava_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/fava"
)

// nested is {"entries":[ + "[" × depth + "]" × depth + ]}: the body that
// ran favaproxy out of memory.
func nested(depth int) []byte {
	return []byte(`{"entries":[` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `]}`)
}

// jsonDepth is the nesting depth of valid JSON, by encoding/json's tokens:
// the reference for CheckDepth.
func jsonDepth(raw []byte) (int, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	depth, deepest := 0, 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return deepest, true
		}
		if err != nil {
			return 0, false
		}
		switch tok {
		case json.Delim('['), json.Delim('{'):
			depth++
			deepest = max(deepest, depth)
		case json.Delim(']'), json.Delim('}'):
			depth--
		}
	}
}

func TestCheckDepth(t *testing.T) {
	for _, tc := range []struct {
		raw string
		max int
		ok  bool
	}{
		{`{"a":[1,{"b":2}]}`, 3, true},
		{`{"a":[1,{"b":2}]}`, 2, false},
		{`"[[[[[[" `, 1, true},          // brackets in a string
		{`{"a\"[[[":"]]]\\"}`, 1, true}, // escaped quotes and backslashes
		{`[]`, 0, false},
		{`1`, 0, true},
	} {
		if err := fava.CheckDepth([]byte(tc.raw), tc.max); (err == nil) != tc.ok {
			t.Errorf("CheckDepth(%s, %d) = %v, want ok=%v", tc.raw, tc.max, err, tc.ok)
		}
	}
}

// TestDeepBodyRefusedInLinearMemory pins the out-of-memory crash: a body
// nested 100, 10,000 and 100,000 levels deep is refused by ParseAddEntries
// quickly, allocating a small multiple of its size (it used to allocate
// per level, quadratically, and died in the 5,000–40,000 range).
func TestDeepBodyRefusedInLinearMemory(t *testing.T) {
	for _, depth := range []int{100, 10000, 100000} {
		body := nested(depth)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		t0 := time.Now()
		_, err := fava.ParseAddEntries(body)
		took := time.Since(t0)
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), "deeper than") {
			t.Fatalf("depth %d: err = %v, want the depth refused", depth, err)
		}
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("depth %d (%d bytes): refused in %s, %d bytes allocated", depth, len(body), took, alloc)
		if alloc > uint64(4*len(body))+64<<10 {
			t.Errorf("depth %d: %d bytes allocated for a %d-byte body", depth, alloc, len(body))
		}
		if took > time.Second {
			t.Errorf("depth %d: took %s", depth, took)
		}
	}
}

// FuzzCheckDepth compares CheckDepth with encoding/json's reading of the
// depth on valid JSON, and checks that ParseAddEntries allocates at most a
// constant multiple of any body's size; the seeds include deep nesting.
func FuzzCheckDepth(f *testing.F) {
	for _, d := range []int{0, 1, 5, 31, 32, 33, 200, 5000} {
		f.Add(nested(d))
		f.Add([]byte(strings.Repeat(`{"a":`, d) + `1` + strings.Repeat(`}`, d)))
	}
	f.Add([]byte(`{"a":"[[[\"]]]","b":[{"c":{}}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if want, ok := jsonDepth(raw); ok {
			err := fava.CheckDepth(raw, fava.MaxDepth)
			if (err == nil) != (want <= fava.MaxDepth) {
				t.Fatalf("CheckDepth = %v for depth %d (max %d)", err, want, fava.MaxDepth)
			}
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _ = fava.ParseAddEntries(raw)
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(64*len(raw))+256<<10 {
			t.Fatalf("%d bytes allocated for a %d-byte body", alloc, len(raw))
		}
	})
}
