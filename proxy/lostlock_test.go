package proxy

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/journal"
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

// verifyingLock is an in-process lock with a fencing token whose Verify
// fails once fail is set: a lock on etcd whose lease ended, or whose fence
// file names a newer holder.
type verifyingLock struct {
	ledger.Locker
	fail atomic.Bool
}

func (l *verifyingLock) Verify(context.Context) error {
	if l.fail.Load() {
		return errors.New("the lock key is gone")
	}
	return nil
}

func (l *verifyingLock) Token() int64 { return 42 }

// TestLockLostDuringWrite: a hold that can no longer be confirmed after
// the write was sent leaves the files and the rollback to the next holder
// and answers 503; the next holder keeps the complete write (nothing is
// lost or written twice), and every journal record carries the hold's
// fencing token.
func TestLockLostDuringWrite(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	lk := &verifyingLock{Locker: ledger.NewRWLock()}
	e.start(t, sharedLock(lk))
	e.front.hold = make(chan struct{})
	e.front.arrived = make(chan struct{}, 1)
	type result struct {
		status int
		body   string
	}
	done := make(chan result, 1)
	go func() {
		resp, body := putEntries(t, e.url, "alice", "k-lost", entriesBody(txn("sent-then-lost")))
		done <- result{resp.StatusCode, body}
	}()
	<-e.front.arrived
	lk.fail.Store(true) // the lease ends while Fava writes
	close(e.front.hold)
	r := <-done
	if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "lost while the write was in progress") {
		t.Fatalf("status %d, body %s; want 503 saying the lock was lost during the write", r.status, r.body)
	}
	manifest := filepath.Join(e.cfg.Ledgers[0].StatePath(), filepath.Base(e.file)+".rollback", "manifest.json")
	if _, err := os.Stat(manifest); err != nil {
		t.Fatalf("the rollback was settled under a lost lock: %v", err)
	}
	e.front.hold = nil
	lk.fail.Store(false) // a new hold
	resp, body := putEntries(t, e.url, "alice", "k-next", entriesBody(txn("next")))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("next write: %d %s", resp.StatusCode, body)
	}
	if _, err := os.Stat(manifest); !os.IsNotExist(err) {
		t.Errorf("the rollback is still hot after the next write: %v", err)
	}
	text := e.ledgerText(t)
	if strings.Count(text, `"sent-then-lost"`) != 1 || strings.Count(text, `"next"`) != 1 {
		t.Fatalf("want each entry once:\n%s", text)
	}
	// The retry of the first key learns its outcome: written.
	resp, body = putEntries(t, e.url, "alice", "k-lost", entriesBody(txn("sent-then-lost")))
	if resp.StatusCode != http.StatusOK || strings.Count(e.ledgerText(t), "sent-then-lost") != 1 {
		t.Fatalf("retry of the first key: %d %s", resp.StatusCode, body)
	}
	n := 0
	err := journal.Read(journal.Path(e.cfg.Ledgers[0].StatePath(), e.file), journal.Filter{}, func(r journal.Record) error {
		n++
		if r.Fence != 42 {
			t.Errorf("journal record %+v without the hold's fencing token", r)
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("journal: %d records, %v", n, err)
	}
}
