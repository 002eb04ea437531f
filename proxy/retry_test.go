package proxy

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/ledger"
)

// fakeClock is a backoff clock that moves only when a fake sleep does.
type fakeClock struct {
	mu  sync.Mutex // guards now
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeSleeps records every backoff wait instead of sleeping, advances a
// fake clock by it, and checks during the wait that the ledger lock is
// free by taking and releasing it.
type fakeSleeps struct {
	clock fakeClock
	srv   *Server

	mu        sync.Mutex // guards waits and lockBusy
	waits     []time.Duration
	lockBusy  int
	lockFreeN atomic.Int64
}

// install makes the ledgers of the server started with o wait through f.
func (f *fakeSleeps) install(o *Options) {
	f.clock.now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	o.AdjustLedger = func(lo *ledger.Options) {
		lo.RetryClock = &f.clock
		lo.RetrySleep = f.sleep
	}
}

// sleep records the wait d and checks that the ledger lock is free: no
// write holds it exclusively, so a read can take it.
func (f *fakeSleeps) sleep(ctx context.Context, d time.Duration) error {
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	release, err := f.srv.bySlug[testSlug].RLock(lctx)
	f.mu.Lock()
	f.waits = append(f.waits, d)
	if err != nil {
		f.lockBusy++
	}
	f.mu.Unlock()
	if err == nil {
		f.lockFreeN.Add(1)
		release()
	}
	f.clock.advance(d)
	return ctx.Err()
}

func (f *fakeSleeps) all() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.waits...)
}

func (f *fakeSleeps) busy() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lockBusy
}

// TestRetryBounds: an outside writer changes the file before every write,
// so every attempt conflicts. favaproxy makes exactly max_attempts
// attempts, waits exponentially growing jittered intervals between them
// without holding the ledger lock, and then answers a 409 that carries the
// current checksum.
func TestRetryBounds(t *testing.T) {
	e, ow, sleeps := startOutside(t, emuStyles[1], 1<<30, func(c *config.Config) {
		c.Retry = config.Retry{MaxAttempts: 4, InitialInterval: 100 * time.Millisecond, MaxElapsed: 10 * time.Second}
	})
	resp, m := e.call(http.MethodPut, "add_account", nil, map[string]any{"account": "Assets:Cash"})
	e.wantConflict("add_account", resp, m, "file")
	if got, want := ow.sourcePuts(), 4; got != want {
		t.Fatalf("%d PUT source attempts, want %d", got, want)
	}
	waits := sleeps.all()
	if got, want := len(waits), 3; got != want {
		t.Fatalf("%d waits (%v), want %d", got, waits, want)
	}
	interval := 100 * time.Millisecond
	for i, d := range waits {
		lo, hi := time.Duration(float64(interval)*0.5), time.Duration(float64(interval)*1.5)
		if d < lo || d > hi {
			t.Errorf("wait %d = %v, want within [%v, %v]", i, d, lo, hi)
		}
		interval = time.Duration(float64(interval) * 1.5)
	}
	if got := sleeps.busy(); got != 0 {
		t.Fatalf("ledger lock held during %d of %d waits", got, len(waits))
	}
	if strings.Contains(e.read(), "Assets:Cash") {
		t.Fatalf("account opened although every write conflicted")
	}
}

// TestRetryMaxElapsed: the total of the waits stays within max_elapsed
// even when attempts are left.
func TestRetryMaxElapsed(t *testing.T) {
	e, ow, sleeps := startOutside(t, emuStyles[0], 1<<30, func(c *config.Config) {
		c.Retry = config.Retry{MaxAttempts: 50, InitialInterval: 100 * time.Millisecond, MaxElapsed: time.Second}
	})
	resp, m := e.call(http.MethodPut, "add_account", nil, map[string]any{"account": "Assets:Cash"})
	e.wantConflict("add_account", resp, m, "file")
	var total time.Duration
	for _, d := range sleeps.all() {
		total += d
	}
	if total > time.Second {
		t.Fatalf("waited %v in total, want at most 1s", total)
	}
	if n := ow.sourcePuts(); n >= 50 || n < 2 {
		t.Fatalf("%d attempts, want more than 1 and fewer than 50", n)
	}
}

// TestRetryDialError: a Fava that cannot be reached is tried max_attempts
// times (the request never reached it), then answered 502.
func TestRetryDialError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var sleeps fakeSleeps
	e := startEmu(t, emuStyles[1], emuOpts{
		upstreamURL: "http://" + addr,
		sleeps:      &sleeps,
		cfg: func(c *config.Config) {
			c.Retry = config.Retry{MaxAttempts: 3, InitialInterval: 10 * time.Millisecond, MaxElapsed: time.Second}
		},
	})
	resp, m := e.call(http.MethodPut, "source_slice", nil, map[string]any{"entry_hash": "abc", "source": "x", "sha256sum": "00"})
	if got, want := resp.StatusCode, http.StatusBadGateway; got != want {
		t.Fatalf("status %d, want %d (%v)", got, want, m)
	}
	if got, want := len(sleeps.all()), 2; got != want {
		t.Fatalf("%d waits, want %d", got, want)
	}
}

// TestNoRetryUpstreamError: an HTML 500 after the request reached Fava is
// not retried: it is answered as it came.
func TestNoRetryUpstreamError(t *testing.T) {
	var calls atomic.Int64
	var sleeps fakeSleeps
	e := startEmu(t, emuStyles[1], emuOpts{
		upstream: func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPut {
					calls.Add(1)
					w.Header().Set("Content-Type", "text/html")
					w.WriteHeader(http.StatusInternalServerError)
					_, _ = w.Write([]byte("<h1>Internal Server Error</h1>"))
					return
				}
				h.ServeHTTP(w, r)
			})
		},
		sleeps: &sleeps,
	})
	resp, _ := do(t, http.MethodPut, e.api("source_slice", nil), `{"entry_hash":"abc","source":"x","sha256sum":"00"}`, http.Header{"Content-Type": {"application/json"}})
	if got, want := resp.StatusCode, http.StatusInternalServerError; got != want {
		t.Fatalf("status %d, want %d", got, want)
	}
	if got, want := calls.Load(), int64(1); got != want {
		t.Fatalf("%d calls, want %d", got, want)
	}
	if got := len(sleeps.all()); got != 0 {
		t.Fatalf("%d waits, want none", got)
	}
}
