package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// readyServer answers /readyz with status and body, and 404 elsewhere.
func readyServer(tb testing.TB, status int, body string) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(body))
	}))
	tb.Cleanup(srv.Close)
	return srv
}

func TestHealth(t *testing.T) {
	t.Run("Ready", func(t *testing.T) {
		srv := readyServer(t, http.StatusOK, `{"status":"ready"}`)
		r := favaproxy(t, nil, "health", "--url", srv.URL)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("exit %d stderr %q, want 0 and nothing", r.code, r.stderr)
		}
	})
	t.Run("NotReadySaysWhy", func(t *testing.T) {
		srv := readyServer(t, http.StatusServiceUnavailable,
			"{\"status\": \"unready\",\n \"error\": \"upstream http://127.0.0.1:5000: connection refused\"}")
		r := favaproxy(t, nil, "health", "--url", srv.URL+"/")
		if got, want := r.code, 1; got != want {
			t.Fatalf("exit %d, want %d", got, want)
		}
		oneLine(t, r.stderr, "503", "upstream http://127.0.0.1:5000: connection refused")
	})
	t.Run("NotReadyWithoutReasonField", func(t *testing.T) {
		srv := readyServer(t, http.StatusServiceUnavailable,
			`{"status": "unavailable", "checks": {"upstream": "ok", "ledger:main": "open: permission denied"}}`)
		r := favaproxy(t, nil, "health", "--url", srv.URL)
		if got, want := r.code, 1; got != want {
			t.Fatalf("exit %d, want %d", got, want)
		}
		oneLine(t, r.stderr, "503", "ledger:main: open: permission denied")
		if strings.Contains(r.stderr, "upstream") {
			t.Errorf("stderr %q names a check that passed", r.stderr)
		}
	})
	t.Run("Down", func(t *testing.T) {
		addr := closedAddr(t)
		r := favaproxy(t, nil, "health", "--url", "http://"+addr)
		if got, want := r.code, 1; got != want {
			t.Fatalf("exit %d, want %d", got, want)
		}
		oneLine(t, r.stderr, addr, "connection refused")
	})
	t.Run("Hangs", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0") // accepts into the backlog, never answers
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		r := favaproxy(t, nil, "health", "--url", "http://"+ln.Addr().String(), "--timeout", "200ms")
		if got, want := r.code, 1; got != want {
			t.Fatalf("exit %d, want %d", got, want)
		}
		oneLine(t, r.stderr, "no answer in time")
	})
	t.Run("ListenFromEnvOnUnspecifiedHost", func(t *testing.T) {
		srv := readyServer(t, http.StatusOK, `{}`)
		_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
		r := favaproxy(t, []string{"FAVAPROXY_LISTEN=0.0.0.0:" + port}, "health")
		if r.code != 0 {
			t.Fatalf("exit %d stderr %q, want 0 (0.0.0.0 probed on 127.0.0.1)", r.code, r.stderr)
		}
	})
}

// oneLine asserts s is one line containing each of wants.
func oneLine(tb testing.TB, s string, wants ...string) {
	tb.Helper()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		tb.Errorf("stderr %q, want exactly one line", s)
	}
	for _, w := range wants {
		if !strings.Contains(s, w) {
			tb.Errorf("stderr %q lacks %q", s, w)
		}
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestProbeURL(t *testing.T) {
	for listen, want := range map[string]string{
		"127.0.0.1:5001": "http://127.0.0.1:5001",
		"0.0.0.0:5001":   "http://127.0.0.1:5001",
		":5001":          "http://127.0.0.1:5001",
		"[::]:5001":      "http://[::1]:5001",
		"[::1]:5001":     "http://[::1]:5001",
		"proxy:5001":     "http://proxy:5001",
	} {
		got, err := probeURL(listen)
		if err != nil || got != want {
			t.Errorf("probeURL(%q) = %q, %v; want %q", listen, got, err, want)
		}
	}
}
