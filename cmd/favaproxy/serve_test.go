package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/internal/proctest"
)

// upstream is a stand-in for Fava that records the writes it receives and
// can hold them until released.
type upstream struct {
	*httptest.Server
	writes chan string   // path of each write, as it arrives
	hold   chan struct{} // a write answers only once this is closed or receives
}

func newUpstream(tb testing.TB, holdWrites bool) *upstream {
	tb.Helper()
	u := &upstream{writes: make(chan string, 16), hold: make(chan struct{})}
	if !holdWrites {
		close(u.hold)
	}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			w.Write([]byte("<html>fava</html>"))
			return
		}
		io.Copy(io.Discard, r.Body)
		u.writes <- r.URL.Path
		<-u.hold
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"data": "saved"}`))
	}))
	tb.Cleanup(func() {
		select {
		case <-u.hold:
		default:
			close(u.hold)
		}
		u.Close()
	})
	return u
}

// serve starts favaproxy serve in front of up for ledger (slug books).
func serve(tb testing.TB, up *upstream, ledger string, args ...string) *proctest.Proc {
	tb.Helper()
	args = append([]string{"serve", "--listen", "127.0.0.1:0", "--upstream", up.URL,
		"--ledger", "books=" + ledger, "--lock-timeout", "20s"}, args...)
	return proctest.Start(tb, bin, args...)
}

// post sends a write through the proxy in the background and reports its
// status on the returned channel (0 when the request failed, for example
// because the proxy was killed).
func post(tb testing.TB, p *proctest.Proc) <-chan int {
	tb.Helper()
	return inBackground(func() (*http.Response, error) {
		return http.Post(p.URL()+"/books/extension/demo/save", "application/json", strings.NewReader(`{}`))
	})
}

// inBackground runs send in a goroutine, drains the answer and reports its
// status on the returned channel, 0 when send failed.
func inBackground(send func() (*http.Response, error)) <-chan int {
	status := make(chan int, 1)
	go func() {
		resp, err := send()
		if err != nil {
			status <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	return status
}

func TestLockExcludesProxyWrites(t *testing.T) {
	ledger := ledgerFile(t)
	up := newUpstream(t, false)
	p := serve(t, up, ledger)

	holder := startUntil(t, "locked", "lock", "--ledger", ledger, "--", "sh", "-c", holdScript)
	status := post(t, p)
	select {
	case path := <-up.writes:
		t.Fatalf("write %s reached Fava while favaproxy lock held the ledger", path)
	case <-time.After(300 * time.Millisecond):
	}
	holder.stdin.Close()
	if got, want := holder.wait(t), 0; got != want {
		t.Fatalf("holder exit %d, want %d", got, want)
	}
	select {
	case <-up.writes:
	case <-time.After(20 * time.Second):
		t.Fatal("write never reached Fava after the lock was released")
	}
	if got, want := <-status, http.StatusOK; got != want {
		t.Fatalf("write status %d, want %d", got, want)
	}
}

func TestProxyWriteExcludesLock(t *testing.T) {
	ledger := ledgerFile(t)
	up := newUpstream(t, true)
	p := serve(t, up, ledger)

	status := post(t, p)
	select {
	case <-up.writes: // the write is at Fava, under the proxy's exclusive lock
	case <-time.After(20 * time.Second):
		t.Fatal("write never reached Fava")
	}
	r := favaproxy(t, nil, "lock", "--ledger", ledger, "--shared", "--timeout", "200ms", "--", "true")
	if got, want := r.code, 1; got != want {
		t.Fatalf("lock during a proxy write: exit %d, want %d; stderr %q", got, want, r.stderr)
	}
	waiter := start(t, "lock", "--ledger", ledger, "--", "echo", "ran")
	select {
	case line := <-waiter.lines:
		t.Fatalf("CMD said %q during a proxy write", line)
	case <-time.After(200 * time.Millisecond):
	}
	close(up.hold)
	if got, want := <-status, http.StatusOK; got != want {
		t.Fatalf("write status %d, want %d", got, want)
	}
	waiter.expect(t, "ran")
	if got, want := waiter.wait(t), 0; got != want {
		t.Fatalf("lock after the write: exit %d, want %d", got, want)
	}
}

func TestHealthAgainstServe(t *testing.T) {
	ledger := ledgerFile(t)
	up := newUpstream(t, false)
	p := serve(t, up, ledger)

	r := favaproxy(t, nil, "health", "--url", p.URL())
	if r.code != 0 {
		t.Fatalf("health against a ready proxy: exit %d, stderr %q", r.code, r.stderr)
	}
	// Same through the configured listen address, as in a container.
	r = favaproxy(t, []string{"FAVAPROXY_LISTEN=" + p.Addr}, "health")
	if r.code != 0 {
		t.Fatalf("health via FAVAPROXY_LISTEN: exit %d, stderr %q", r.code, r.stderr)
	}

	up.Close() // Fava goes down
	r = favaproxy(t, nil, "health", "--url", p.URL())
	if got, want := r.code, 1; got != want {
		t.Fatalf("health with Fava down: exit %d, want %d", got, want)
	}
	oneLine(t, r.stderr, "503", "upstream")
}

func TestServeLifecycle(t *testing.T) {
	ledger := ledgerFile(t)
	up := newUpstream(t, false)
	t.Run("SIGTERMStopsCleanly", func(t *testing.T) {
		p := serve(t, up, ledger)
		if err := p.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := p.Wait(20 * time.Second); err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.Log())
		}
	})
	t.Run("BindErrorAtStart", func(t *testing.T) {
		p := serve(t, up, ledger)
		r := favaproxy(t, nil, "serve", "--listen", p.Addr, "--upstream", up.URL, "--ledger", ledger)
		if r.code != 1 || !strings.Contains(r.stderr, "listen") || !strings.Contains(r.stderr, "address already in use") {
			t.Fatalf("exit %d stderr %q, want 1 with the bind error", r.code, r.stderr)
		}
	})

}

func TestLockModesAgainstProxyReads(t *testing.T) {
	ledger := ledgerFile(t)
	up := newUpstream(t, false)
	p := serve(t, up, ledger)
	get := func() <-chan int {
		return inBackground(func() (*http.Response, error) {
			return http.Get(p.URL() + "/books/income_statement/")
		})
	}

	t.Run("SharedLetsReadsThrough", func(t *testing.T) {
		holder := startUntil(t, "locked", "lock", "--ledger", ledger, "--shared", "--", "sh", "-c", holdScript)
		select {
		case got := <-get():
			if got != http.StatusOK {
				t.Fatalf("read status %d, want 200", got)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("read waited for a shared favaproxy lock")
		}
		holder.stdin.Close()
		holder.wait(t)
	})
	t.Run("ExclusiveHoldsReads", func(t *testing.T) {
		holder := startUntil(t, "locked", "lock", "--ledger", ledger, "--", "sh", "-c", holdScript)
		status := get()
		select {
		case got := <-status:
			t.Fatalf("read answered %d while favaproxy lock held the ledger exclusively", got)
		case <-time.After(300 * time.Millisecond):
		}
		holder.stdin.Close()
		holder.wait(t)
		if got, want := <-status, http.StatusOK; got != want {
			t.Fatalf("read status %d, want %d", got, want)
		}
	})
}
