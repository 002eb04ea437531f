package proxy

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/ledger"
)

// TestWriteFsyncedBeforeAnswer: favaproxy answers a write 2xx only after
// the ledger files Fava changed are fsynced. The fsync of the ledger file
// is held; the answer must not come while it is, and comes once it ends.
// With durability disabled, the answer comes without any fsync of the
// ledger (the control: the test can tell the two apart).
func TestWriteFsyncedBeforeAnswer(t *testing.T) {
	for _, durable := range []bool{true, false} {
		t.Run(map[bool]string{true: "Durable", false: "Disabled"}[durable], func(t *testing.T) {
			e := newAddEnv(t, favatest.Style130, "")
			e.cfg.Durability.Disabled = !durable
			main, err := filepath.EvalSymlinks(e.file)
			if err != nil {
				t.Fatal(err)
			}
			var ledgerSyncs atomic.Int32
			syncing, release := make(chan struct{}, 4), make(chan struct{})
			e.start(t, Options{AdjustLedger: func(o *ledger.Options) {
				o.Sync = func(f *os.File) error {
					if f.Name() == main {
						ledgerSyncs.Add(1)
						syncing <- struct{}{}
						<-release
					}
					return f.Sync()
				}
			}})
			type answer struct {
				status int
				body   string
			}
			done := make(chan answer, 1)
			go func() {
				resp, body := putEntries(t, e.url, "alice", "k-sync", entriesBody(txn("synced")))
				done <- answer{resp.StatusCode, body}
			}()
			if !durable {
				a := <-done
				if a.status != http.StatusOK || ledgerSyncs.Load() != 0 {
					t.Fatalf("status=%d with %d fsyncs of the ledger, want 200 and none; %s", a.status, ledgerSyncs.Load(), a.body)
				}
				return
			}
			select {
			case <-syncing:
			case a := <-done:
				t.Fatalf("answered (status %d) before the ledger file was fsynced; %s", a.status, a.body)
			case <-time.After(10 * time.Second):
				t.Fatal("the ledger file was never fsynced")
			}
			if !strings.Contains(e.ledgerText(t), "synced") {
				t.Fatal("fsync before Fava wrote the entry")
			}
			select {
			case a := <-done:
				t.Fatalf("answered (status %d) while the fsync was still running", a.status)
			case <-time.After(100 * time.Millisecond):
			}
			close(release)
			if a := <-done; a.status != http.StatusOK {
				t.Fatalf("status=%d, want 200; %s", a.status, a.body)
			}
		})
	}
}

// TestFullDiskWritesNothing: when the pre-images cannot be saved (a full
// disk: the fsync of the copy fails with ENOSPC), the write is answered
// 507, nothing is sent to Fava and the ledger stays as it was; once there
// is room again the same request is written.
func TestFullDiskWritesNothing(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	var full atomic.Bool
	full.Store(true)
	e.start(t, Options{AdjustLedger: func(o *ledger.Options) {
		o.Sync = func(f *os.File) error {
			if full.Load() && strings.Contains(f.Name(), ".rollback") {
				return syscall.ENOSPC
			}
			return f.Sync()
		}
	}})
	before := e.ledgerText(t)
	resp, body := putEntries(t, e.url, "alice", "k-full", entriesBody(txn("no room")))
	if got, want := resp.StatusCode, http.StatusInsufficientStorage; got != want {
		t.Fatalf("status=%d, want %d; %s", got, want, body)
	}
	if e.front.calls.Load() != 0 || e.ledgerText(t) != before {
		t.Fatalf("with no room for the pre-images: %d calls to Fava, ledger changed=%v", e.front.calls.Load(), e.ledgerText(t) != before)
	}
	full.Store(false)
	resp, body = putEntries(t, e.url, "alice", "k-full", entriesBody(txn("no room")))
	if resp.StatusCode != http.StatusOK || strings.Count(e.ledgerText(t), "^idem-k-full") != 1 {
		t.Fatalf("with room again: status=%d; %s", resp.StatusCode, body)
	}
}

// TestReadyWhileAWriteMayStillRun: a write Fava did not answer in time
// leaves its rollback hot until the request can no longer be running;
// meanwhile /readyz stays 200 (reads go on, and an unready server would
// never get the writer that settles it), and once the deadline has passed
// a probe settles it.
func TestReadyWhileAWriteMayStillRun(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	e.cfg.Timeouts.Upstream = 300 * time.Millisecond
	e.front.hold = make(chan struct{})
	t.Cleanup(func() { close(e.front.hold) })
	e.start(t, Options{})
	if resp, b := putEntries(t, e.url, "alice", "", entriesBody(txn("slow"))); resp.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status=%d, want 504; %s", resp.StatusCode, b)
	}
	ready := func() int {
		resp, _ := do(t, http.MethodGet, e.p.URL+"/readyz", "", nil)
		return resp.StatusCode
	}
	if got := ready(); got != http.StatusOK {
		t.Fatalf("/readyz while the write may still run: %d, want 200", got)
	}
	time.Sleep(400 * time.Millisecond) // past the deadline
	if got := ready(); got != http.StatusOK {
		t.Fatalf("/readyz after the deadline: %d, want 200", got)
	}
	rb := filepath.Join(e.cfg.Ledgers[0].StatePath(), "main.beancount.rollback", "manifest.json")
	if _, err := os.Stat(rb); !os.IsNotExist(err) {
		t.Fatalf("the rollback is still hot after a probe past its deadline: %v", err)
	}
}

// TestUnreachableFavaAnsweredAtOnce: a write that never reached Fava (it
// could not be connected to) wrote nothing; it is answered at once, not
// after waiting durability.quiet for files that nobody writes.
func TestUnreachableFavaAnsweredAtOnce(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	cfg := testConfig(t, down.URL)
	cfg.Durability.Quiet = 5 * time.Second
	p := startProxy(t, cfg, Options{})
	t0 := time.Now()
	resp, body := do(t, http.MethodPut, p.URL+"/"+testSlug+"/api/format_source", `{"source":""}`, http.Header{"Content-Type": {"application/json"}})
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status=%d, want 502; %s", resp.StatusCode, body)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("answered after %s, want at once", d)
	}
}
