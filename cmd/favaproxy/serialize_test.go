package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// overlapBackend stands in for Fava and records what Fava cannot survive:
// two writes at once, or a read of the ledger during a write.
type overlapBackend struct {
	*httptest.Server
	writers, readers atomic.Int64
	overlaps         atomic.Int64 // requests that saw a write running beside them
	writes, reads    atomic.Int64
}

func newOverlapBackend(tb testing.TB) *overlapBackend {
	tb.Helper()
	b := &overlapBackend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if !strings.HasPrefix(r.URL.Path, "/books/") {
			return // health probes of the proxy
		}
		if r.Method == http.MethodGet {
			b.reads.Add(1)
			b.readers.Add(1)
			if b.writers.Load() > 0 {
				b.overlaps.Add(1)
			}
			time.Sleep(time.Millisecond) // a reload of the ledger
			b.readers.Add(-1)
			w.Write([]byte("<html>page</html>"))
			return
		}
		b.writes.Add(1)
		if b.writers.Add(1) > 1 || b.readers.Load() > 0 {
			b.overlaps.Add(1)
		}
		time.Sleep(2 * time.Millisecond) // read, truncate, write back the file
		b.writers.Add(-1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"data": "saved"}`))
	}))
	tb.Cleanup(b.Close)
	return b
}

// sendLoad sends clients×perClient requests, every fourth a write, spread over
// the base URLs, and fails on any status but 200.
func sendLoad(tb testing.TB, bases ...string) {
	tb.Helper()
	const clients, perClient = 12, 24
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Go(func() {
			for i := range perClient {
				base := bases[(c+i)%len(bases)]
				var resp *http.Response
				var err error
				if i%4 == 0 {
					resp, err = http.Post(base+"/books/extension/demo/save", "application/json", strings.NewReader(`{}`))
				} else {
					resp, err = http.Get(base + "/books/income_statement/")
				}
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("%s %s: status %d", resp.Request.Method, resp.Request.URL, resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

func TestTwoServesSerialize(t *testing.T) {
	t.Run("WithoutProxyOverlaps", func(t *testing.T) {
		// The same load straight at the backend: shows the test sees overlaps.
		b := newOverlapBackend(t)
		sendLoad(t, b.URL)
		if b.overlaps.Load() == 0 {
			t.Fatal("no overlap without the proxy: the backend cannot tell serialization from luck")
		}
		t.Logf("without the proxy: %d overlaps in %d writes and %d reads", b.overlaps.Load(), b.writes.Load(), b.reads.Load())
	})
	t.Run("TwoProxiesNeverOverlap", func(t *testing.T) {
		b := newOverlapBackend(t)
		ledger := ledgerFile(t)
		up := &upstream{Server: b.Server}
		p1 := serve(t, up, ledger)
		p2 := serve(t, up, ledger)
		sendLoad(t, p1.URL(), p2.URL())
		if got := b.overlaps.Load(); got != 0 {
			t.Fatalf("%d overlaps through two proxies (%d writes, %d reads), want 0", got, b.writes.Load(), b.reads.Load())
		}
		if b.writes.Load() == 0 || b.reads.Load() == 0 {
			t.Fatalf("backend saw %d writes and %d reads", b.writes.Load(), b.reads.Load())
		}
	})
}

// TestKilledServeReplaced: kill -9 of the proxy holding the ledger lock
// frees the lock at once. Without the rollback journal the next proxy's
// write proceeds within a second, while the dead proxy's Fava may still be
// writing (the data loss of a dead lock holder). With it, the next proxy
// finds the dead holder's pre-images and sends nothing until that request
// can no longer be running (timeouts.upstream after it began), then
// proceeds.
func TestKilledServeReplaced(t *testing.T) {
	t.Run("WithoutRollbackWithinOneSecond", func(t *testing.T) {
		t.Setenv("FAVAPROXY_DURABILITY_DISABLED", "true")
		ledger := ledgerFile(t)
		up := newUpstream(t, true)
		p1 := serve(t, up, ledger)
		p2 := serve(t, up, ledger)

		post(t, p1)
		select {
		case <-up.writes: // p1 holds the ledger's lock while Fava works
		case <-time.After(20 * time.Second):
			t.Fatal("write through the first proxy never reached Fava")
		}
		second := post(t, p2)
		select {
		case <-up.writes:
			t.Fatal("second proxy's write reached Fava while the first held the lock")
		case <-time.After(200 * time.Millisecond):
		}
		if err := p1.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		select {
		case <-up.writes:
			t.Logf("second proxy proceeded %s after kill -9 of the first", time.Since(killed).Round(time.Millisecond))
		case <-time.After(time.Second):
			t.Fatal("second proxy did not proceed within 1s of kill -9 of the lock holder")
		}
		close(up.hold)
		if got, want := <-second, http.StatusOK; got != want {
			t.Fatalf("second proxy's write: status %d, want %d", got, want)
		}
	})
	t.Run("WaitsOutTheDeadHoldersWrite", func(t *testing.T) {
		const upstreamTimeout = 2 * time.Second
		t.Setenv("FAVAPROXY_TIMEOUTS_UPSTREAM", upstreamTimeout.String())
		t.Setenv("FAVAPROXY_DURABILITY_QUIET", "100ms")
		ledger := ledgerFile(t)
		up := newUpstream(t, true)
		p1 := serve(t, up, ledger)
		p2 := serve(t, up, ledger)

		post(t, p1)
		select {
		case <-up.writes:
		case <-time.After(20 * time.Second):
			t.Fatal("write through the first proxy never reached Fava")
		}
		began := time.Now()
		if err := p1.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Fava still holds p1's write: p2's is refused, not sent.
		if got, want := <-post(t, p2), http.StatusServiceUnavailable; got != want {
			t.Fatalf("write while the dead holder's request may run: status %d, want %d", got, want)
		}
		select {
		case path := <-up.writes:
			t.Fatalf("second proxy's write %s reached Fava while the dead holder's request may still run", path)
		default:
		}
		// Once that request can no longer be running, writes go on.
		var second <-chan int
		for deadline := time.Now().Add(20 * time.Second); ; {
			second = post(t, p2)
			select {
			case <-up.writes:
			case got := <-second:
				if got != http.StatusServiceUnavailable || time.Now().After(deadline) {
					t.Fatalf("write after the kill: status %d, want it to reach Fava", got)
				}
				time.Sleep(100 * time.Millisecond)
				continue
			}
			break
		}
		if waited := time.Since(began); waited < upstreamTimeout-200*time.Millisecond {
			t.Fatalf("second proxy's write reached Fava %s after the dead holder's began, want ≥ %s", waited, upstreamTimeout)
		}
		close(up.hold)
		if got, want := <-second, http.StatusOK; got != want {
			t.Fatalf("second proxy's write: status %d, want %d", got, want)
		}
	})
}
