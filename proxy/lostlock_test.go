package proxy

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/favaproxy/favaproxy/ledger"
)

// losingLock is an in-process lock that reports its exclusive hold lost
// once lose is called, as a lease-based lock does when its lease expires.
type losingLock struct {
	ledger.Locker
	once sync.Once
	lost chan struct{}
}

func (l *losingLock) Lost() <-chan struct{} { return l.lost }
func (l *losingLock) lose()                 { l.once.Do(func() { close(l.lost) }) }

// TestLostLockSendsNothing: once the ledger lock reports its hold lost, no
// write of any kind is sent to Fava; the client gets 503 with Retry-After.
func TestLostLockSendsNothing(t *testing.T) {
	up := &recordingUpstream{}
	lk := &losingLock{Locker: ledger.NewRWLock(), lost: make(chan struct{})}
	p := startProxy(t, testConfig(t, startUpstream(t, up).URL), sharedLock(lk))
	base := p.URL + "/" + testSlug + "/api/"

	resp, body := do(t, http.MethodPut, base+"format_source", `{"source":""}`, http.Header{"X-Which": {"before"}})
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Fatalf("before the loss: status=%d, want %d; body %s", got, want, body)
	}
	lk.lose()
	for _, tc := range []struct{ method, name, body string }{
		{http.MethodPut, "format_source", `{"source":""}`},
		{http.MethodPut, "add_entries", `{"entries":[]}`},
		{http.MethodPut, "source", `{"source":"","sha256sum":""}`},
	} {
		resp, body := do(t, tc.method, base+tc.name, tc.body, http.Header{"X-Which": {"after"}})
		if got, want := resp.StatusCode, http.StatusServiceUnavailable; got != want || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s: status=%d Retry-After=%q, want %d with Retry-After; body %s",
				tc.method, tc.name, got, resp.Header.Get("Retry-After"), want, body)
		}
	}
	if got, want := strings.Join(up.Seen(), ","), "before"; got != want {
		t.Errorf("upstream saw %q, want %q", got, want)
	}
}
