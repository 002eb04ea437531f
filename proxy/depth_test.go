package proxy

import (
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/internal/favatest"
)

// TestDeeplyNestedBodyRefused pins a crash: PUT add_entries with
// {"entries":[ + "[" × N + "]" × N + ]} — tens of kilobytes — made
// favaproxy allocate per level of nesting and die of "out of memory" for N
// in the 5,000–40,000 range. Now depths 100, 10,000 and 100,000 are each
// answered 400 naming the limit, at once and in memory bounded by the
// body's size; Fava never sees them, the ledger is unchanged, and a normal
// write right after succeeds.
func TestDeeplyNestedBodyRefused(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	e.start(t, Options{})
	before := e.ledgerText(t)
	for _, depth := range []int{100, 10000, 100000} {
		body := `{"entries":[` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `]}`
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		t0 := time.Now()
		resp, b := putEntries(t, e.url, "alice", "", body)
		took := time.Since(t0)
		runtime.ReadMemStats(&m1)
		alloc := m1.TotalAlloc - m0.TotalAlloc
		t.Logf("depth %d (%d bytes): %d in %s, %d KiB allocated in the test process (client and server)",
			depth, len(body), resp.StatusCode, took, alloc>>10)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "levels") {
			t.Fatalf("depth %d: status=%d %s, want 400 naming the limit", depth, resp.StatusCode, b)
		}
		if alloc > uint64(16*len(body))+4<<20 {
			t.Errorf("depth %d: %d KiB allocated for a %d-byte body", depth, alloc>>10, len(body))
		}
	}
	if e.front.calls.Load() != 0 {
		t.Errorf("Fava saw %d add_entries calls, want none", e.front.calls.Load())
	}
	if e.ledgerText(t) != before {
		t.Fatal("the ledger changed")
	}
	if resp, b := putEntries(t, e.url, "alice", "", entriesBody(txn("after"))); resp.StatusCode != http.StatusOK {
		t.Fatalf("a normal write after: status=%d %s", resp.StatusCode, b)
	}
}
