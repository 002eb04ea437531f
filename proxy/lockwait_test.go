package proxy

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/ledger"
	"github.com/favaproxy/favaproxy/lock"
)

// recordingUpstream records the X-Which header of every request it gets and
// answers 200.
type recordingUpstream struct {
	mu   sync.Mutex // guards seen
	seen []string
}

func (u *recordingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	u.mu.Lock()
	u.seen = append(u.seen, r.Header.Get("X-Which"))
	u.mu.Unlock()
	io.WriteString(w, `{"data": "ok"}`)
}

func (u *recordingUpstream) Seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.seen...)
}

// sharedLock makes every ledger of a server use lk, so a test can hold it.
func sharedLock(lk ledger.Locker) Options {
	return Options{NewLocker: func(config.Ledger, lock.EtcdHooks) (ledger.Locker, error) { return lk, nil }}
}

// putAsync sends a write in the background; its result arrives on the
// returned channel.
func putAsync(ctx context.Context, url, which, user string) <-chan *http.Response {
	ch := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "PUT", url, strings.NewReader(`{"entries":[]}`))
		req.Header.Set("X-Which", which)
		req.Header.Set("X-Request-ID", "req-"+which)
		req.SetBasicAuth(user, "pw")
		resp, err := noRedirect.Do(req)
		if err != nil {
			ch <- nil
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		ch <- resp
	}()
	return ch
}

func TestLockTimeout(t *testing.T) {
	up := &recordingUpstream{}
	lk := ledger.NewRWLock()
	cfg := testConfig(t, startUpstream(t, up).URL)
	cfg.LockTimeout = 50 * time.Millisecond
	p := startProxy(t, cfg, sharedLock(lk))
	release, err := lk.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	for _, tc := range []struct{ method, path string }{
		{"PUT", "/" + testSlug + "/api/add_entries"},
		{"GET", "/" + testSlug + "/api/ledger_data"},
	} {
		resp, body := do(t, tc.method, p.URL+tc.path, `{"entries":[]}`, nil)
		if got, want := resp.StatusCode, http.StatusServiceUnavailable; got != want {
			t.Fatalf("%s: status=%d, want %d", tc.method, got, want)
		}
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: no Retry-After", tc.method)
		}
		if _, ok := jsonBody(t, resp, body)["error"].(string); !ok {
			t.Errorf("%s: body %q has no error", tc.method, body)
		}
	}
	if got := up.Seen(); len(got) != 0 {
		t.Errorf("upstream saw %q, want nothing", got)
	}
}

func TestClientDisconnectWhileWaiting(t *testing.T) {
	up := &recordingUpstream{}
	lk := ledger.NewRWLock()
	p := startProxy(t, testConfig(t, startUpstream(t, up).URL), sharedLock(lk))
	l := p.bySlug[testSlug]
	url := p.URL + "/" + testSlug + "/api/add_entries"

	release, err := lk.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// A waits, behind the held lock, then gives up.
	ctxA, cancelA := context.WithCancel(context.Background())
	doneA := putAsync(ctxA, url, "A", "alice")
	waitFor(t, "A to wait", func() bool { return l.Waiting() == 1 })
	cancelA()
	if resp := <-doneA; resp != nil {
		t.Fatalf("A got status %d, want an aborted request", resp.StatusCode)
	}
	waitFor(t, "A to leave the queue", func() bool { return l.Waiting() == 0 && l.Users() == 0 })

	// B, the same user, takes A's place and gets the lock once it is free.
	doneB := putAsync(context.Background(), url, "B", "alice")
	waitFor(t, "B to wait", func() bool { return l.Waiting() == 1 })
	release()
	if resp := <-doneB; resp == nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("B: %v, want 200", resp)
	}
	if got, want := strings.Join(up.Seen(), ","), "B"; got != want {
		t.Errorf("upstream saw %q, want %q", got, want)
	}
	waitFor(t, "the 499 log line", func() bool { return strings.Contains(p.Log.String(), "status=499") })
}

func TestWriteFinishesAfterClientLeaves(t *testing.T) {
	started, proceed := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var finished []string // requests the upstream completed with a live context
	up := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		which := r.Header.Get("X-Which")
		if which == "C" {
			close(started)
			<-proceed
		}
		if r.Context().Err() == nil {
			mu.Lock()
			finished = append(finished, which)
			mu.Unlock()
		}
		io.WriteString(w, `{"data": "ok"}`)
	}))
	lk := ledger.NewRWLock()
	o := sharedLock(lk)
	logBuf := &syncBuffer{}
	o.Logger = slog.New(slog.NewTextHandler(logBuf, nil))
	s, err := New(testConfig(t, up.URL), o)
	if err != nil {
		t.Fatal(err)
	}
	// Serve through a wrapper that reports when the proxy sees C's client
	// leave: C's request context ends while Fava still holds C, so it can
	// only be the client leaving.
	clientGone := make(chan struct{})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Which") == "C" {
			go func() {
				<-r.Context().Done()
				close(clientGone)
			}()
		}
		s.Handler().ServeHTTP(w, r)
	}))
	defer front.Close()
	url := front.URL + "/" + testSlug + "/api/add_entries"

	ctxC, cancelC := context.WithCancel(context.Background())
	doneC := putAsync(ctxC, url, "C", "carol")
	<-started
	cancelC() // the client leaves while Fava writes
	<-doneC
	<-clientGone
	close(proceed)

	if resp := <-putAsync(context.Background(), url, "D", "carol"); resp == nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("D: %v, want 200", resp)
	}
	// C logs its line after it has released its locks, so D may finish
	// first.
	waitFor(t, "C's log line", func() bool { return strings.Contains(logBuf.String(), "request_id=req-C") })
	var lineC string
	for line := range strings.Lines(logBuf.String()) {
		if strings.Contains(line, "request_id=req-C") {
			lineC = line
		}
	}
	if !strings.Contains(lineC, "msg=write") || !strings.Contains(lineC, "status=200") {
		t.Errorf("C's write log line %q, want a write that got 200 from Fava; log:\n%s", lineC, logBuf.String())
	}
	mu.Lock()
	defer mu.Unlock()
	if got, want := strings.Join(finished, ","), "C,D"; got != want {
		t.Errorf("upstream completed %q, want %q", got, want)
	}
	// The lock is free again.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	release, err := lk.Lock(ctx)
	if err != nil {
		t.Fatalf("ledger lock still held: %v", err)
	}
	release()
}

func TestQueueFull(t *testing.T) {
	up := &recordingUpstream{}
	lk := ledger.NewRWLock()
	cfg := testConfig(t, startUpstream(t, up).URL)
	cfg.Limits.QueueDepth = 1
	p := startProxy(t, cfg, sharedLock(lk))
	l := p.bySlug[testSlug]
	url := p.URL + "/" + testSlug + "/api/add_entries"

	release, err := lk.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	doneA := putAsync(context.Background(), url, "A", "alice")
	waitFor(t, "A to wait", func() bool { return l.Waiting() == 1 })
	resp, body := do(t, "PUT", url, `{"entries":[]}`, http.Header{"X-Which": {"B"}})
	if got, want := resp.StatusCode, http.StatusServiceUnavailable; got != want {
		t.Fatalf("status=%d, want %d", got, want)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
	jsonBody(t, resp, body)
	release()
	if resp := <-doneA; resp == nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("A: %v, want 200", resp)
	}
	if got, want := strings.Join(up.Seen(), ","), "A"; got != want {
		t.Errorf("upstream saw %q, want %q", got, want)
	}
}
