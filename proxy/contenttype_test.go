package proxy

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/ledger"
)

// TestAddEntriesWithoutContentTypeAnsweredTheSame pins an inconsistency:
// an add_entries without a Content-Type was forwarded without one when
// alone (and Fava, which reads only JSON media types, refused it) but with
// one when batched (and it was written): the same request succeeded or
// failed by timing. Now it is sent as JSON either way.
func TestAddEntriesWithoutContentTypeAnsweredTheSame(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	lk := ledger.NewRWLock()
	e.start(t, sharedLock(lk))
	noType := func(narration string) int {
		resp, _ := do(t, http.MethodPut, e.url, entriesBody(txn(narration)), http.Header{"Authorization": {basicAuth(narration)}})
		return resp.StatusCode
	}
	if got := noType("alone"); got != http.StatusOK {
		t.Fatalf("alone: status %d, want 200", got)
	}
	release, err := lk.Lock(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	l := e.p.bySlug[testSlug]
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i, n := range []string{"batched-a", "batched-b"} {
		wg.Go(func() { codes[i] = noType(n) })
		waitFor(t, "the request to queue", func() bool { return l.QueuedAdds() == i+1 })
	}
	release()
	wg.Wait()
	if codes[0] != http.StatusOK || codes[1] != http.StatusOK {
		t.Fatalf("batched: statuses %v, want 200s", codes)
	}
	text := e.ledgerText(t)
	for _, n := range []string{"alone", "batched-a", "batched-b"} {
		if strings.Count(text, `"`+n+`"`) != 1 {
			t.Errorf("%s is not in the ledger once:\n%s", n, text)
		}
	}
}
