package proxy

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/ledger"
	"github.com/favaproxy/favaproxy/lock"
)

// checkedLocker is a Locker with a Check that fails with err.
type checkedLocker struct {
	ledger.Locker
	err error
}

func (c checkedLocker) Check() error { return c.err }

func TestHealth(t *testing.T) {
	upURL, _ := countingUpstream(t)

	t.Run("Livez", func(t *testing.T) {
		p := startProxy(t, testConfig(t, upURL), Options{})
		resp, body := do(t, "GET", p.URL+"/livez", "", nil)
		if got, want := resp.StatusCode, http.StatusOK; got != want {
			t.Fatalf("status=%d, want %d", got, want)
		}
		if got, want := jsonBody(t, resp, body)["status"], "ok"; got != want {
			t.Errorf("status field=%v, want %q", got, want)
		}
	})

	t.Run("Ready", func(t *testing.T) {
		p := startProxy(t, testConfig(t, upURL), Options{})
		for _, path := range []string{"/readyz", "/healthz"} {
			resp, body := do(t, "GET", p.URL+path, "", nil)
			if got, want := resp.StatusCode, http.StatusOK; got != want {
				t.Fatalf("%s: status=%d, want %d; body %s", path, got, want, body)
			}
			m := jsonBody(t, resp, body)
			if got, want := m["status"], "ok"; got != want {
				t.Errorf("%s: status field=%v, want %q", path, got, want)
			}
		}
	})

	failing := []struct {
		name  string
		setup func(t *testing.T, cfg *config.Config) Options
		check string
	}{
		{"UpstreamDown", func(t *testing.T, cfg *config.Config) Options {
			down := httptest.NewServer(http.NotFoundHandler())
			down.Close()
			cfg.Upstream = down.URL
			return Options{}
		}, "upstream"},
		{"Upstream5xx", func(t *testing.T, cfg *config.Config) Options {
			up := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Error(w, "broken", http.StatusInternalServerError)
			}))
			cfg.Upstream = up.URL
			return Options{}
		}, "upstream"},
		{"LedgerUnreadable", func(t *testing.T, cfg *config.Config) Options {
			return Options{} // the file is removed once New has read its title
		}, "ledger:" + testSlug},
		// A journal that cannot be written fails every add_entries: the
		// state directory is replaced by a file once the server runs.
		{"JournalUnwritable", func(t *testing.T, cfg *config.Config) Options {
			return Options{}
		}, "ledger:" + testSlug},
		// A ledger torn after favaproxy started (a truncated line) must
		// not be served and appended to as if it were whole.
		{"LedgerTorn", func(t *testing.T, cfg *config.Config) Options {
			return Options{}
		}, "ledger:" + testSlug},
		{"LockBroken", func(t *testing.T, cfg *config.Config) Options {
			return Options{NewLocker: func(config.Ledger, lock.EtcdHooks) (ledger.Locker, error) {
				return checkedLocker{ledger.NewRWLock(), errors.New("lock file: permission denied")}, nil
			}}
		}, "lock:" + testSlug},
	}
	for _, tc := range failing {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, upURL)
			o := tc.setup(t, &cfg)
			p := startProxy(t, cfg, o)
			switch tc.name {
			case "LedgerUnreadable":
				if err := os.Remove(cfg.Ledgers[0].File); err != nil {
					t.Fatal(err)
				}
			case "LedgerTorn":
				f, err := os.OpenFile(cfg.Ledgers[0].File, os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.WriteString("\n2024-01-02 * \"cut\" \"sh")
				f.Close()
				f2, _ := os.OpenFile(cfg.Ledgers[0].File, os.O_APPEND|os.O_WRONLY, 0)
				f2.WriteString("\n2024-0")
				f2.Close()
			case "JournalUnwritable":
				state := cfg.Ledgers[0].StatePath()
				if err := os.RemoveAll(state); err != nil {
					t.Fatal(err)
				}
				writeText(t, state, "not a directory")
			}
			resp, body := do(t, "GET", p.URL+"/readyz", "", nil)
			if got, want := resp.StatusCode, http.StatusServiceUnavailable; got != want {
				t.Fatalf("status=%d, want %d; body %s", got, want, body)
			}
			m := jsonBody(t, resp, body)
			if got, want := m["status"], "unavailable"; got != want {
				t.Errorf("status field=%v, want %q", got, want)
			}
			checks, _ := m["checks"].(map[string]any)
			if v, _ := checks[tc.check].(string); v == "" || v == "ok" {
				t.Errorf("checks[%q]=%q, want the failure; body %s", tc.check, v, body)
			}
			// /readyz is not authenticated: it names no file and repeats
			// no raw error; the log has the details.
			if dir := filepath.Dir(cfg.Ledgers[0].File); strings.Contains(body, dir) || strings.Contains(body, "denied") {
				t.Errorf("body gives details away: %s", body)
			}
			if !strings.Contains(p.Log.String(), "not ready") {
				t.Errorf("the failure is not logged:\n%s", p.Log.String())
			}
		})
	}
}

// TestServeShutdownFinishesWrites pins that Serve, once its context ends,
// lets an in-flight write finish and returns only after its lock is free.
func TestServeShutdownFinishesWrites(t *testing.T) {
	started, proceed := make(chan struct{}), make(chan struct{})
	up := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-proceed
		w.Write([]byte(`{"data": "ok"}`))
	}))
	lk := ledger.NewRWLock()
	o := sharedLock(lk)
	o.Logger = discardLogger()
	s, err := New(testConfig(t, up.URL), o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx) }()

	done := putAsync(context.Background(), "http://"+s.Addr()+"/"+testSlug+"/api/add_entries", "A", "alice")
	<-started
	cancel()
	waitFor(t, "the listener to close", func() bool {
		c, err := net.Dial("tcp", s.Addr())
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	close(proceed)
	if resp := <-done; resp == nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("in-flight write: %v, want 200", resp)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	release, err := lk.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	release()
}

func TestListenBindError(t *testing.T) {
	upURL, _ := countingUpstream(t)
	p := startProxy(t, testConfig(t, upURL), Options{})
	cfg := testConfig(t, upURL)
	cfg.Listen = p.Addr()
	s, err := New(cfg, Options{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err == nil {
		t.Fatal("Listen on a taken address succeeded")
	}
}
