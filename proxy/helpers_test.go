package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/config"
)

// testSlug is the slug of the ledger every test server serves.
const testSlug = "test-ledger"

// syncBuffer is a bytes.Buffer safe for concurrent writes: the server's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// testProxy is a running favaproxy in front of an upstream.
type testProxy struct {
	*Server
	URL string // http://127.0.0.1:PORT
	Log *syncBuffer
}

// writeLedger writes a ledger file titled "Test Ledger" into a temporary
// directory and returns its path.
func writeLedger(tb testing.TB) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "main.beancount")
	if err := os.WriteFile(p, []byte("option \"title\" \"Test Ledger\"\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// testConfig returns a valid configuration for one ledger in front of
// upstream, listening on a free loopback port.
func testConfig(tb testing.TB, upstream string) config.Config {
	tb.Helper()
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Upstream = upstream
	cfg.Ledgers = []config.Ledger{{File: writeLedger(tb)}}
	cfg.ShutdownGrace = 5 * time.Second
	cfg.Durability.Quiet = 20 * time.Millisecond // Fava that does not answer is gone at once here
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// startProxy runs a Server for cfg through Listen and Serve, and stops it
// at the end of the test, failing the test if Serve fails.
func startProxy(tb testing.TB, cfg config.Config, o Options) *testProxy {
	tb.Helper()
	return startServer(tb, cfg, o, nil)
}

// startServer is startProxy with a hook that adjusts the server before it
// serves; adjust may be nil.
func startServer(tb testing.TB, cfg config.Config, o Options, adjust func(*Server)) *testProxy {
	tb.Helper()
	logBuf := &syncBuffer{}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := New(cfg, o)
	if err != nil {
		tb.Fatal(err)
	}
	if adjust != nil {
		adjust(s)
	}
	if err := s.Listen(); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	tb.Cleanup(func() {
		// Close the clients' spare connections first: Shutdown waits up to
		// 5 s for a connection that never sent a request (net/http treats
		// it as idle only then).
		noRedirect.CloseIdleConnections()
		http.DefaultClient.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Serve: %v", err)
		}
		if tb.Failed() {
			tb.Logf("proxy log:\n%s", logBuf.String())
		}
	})
	return &testProxy{Server: s, URL: "http://" + s.Addr(), Log: logBuf}
}

// startUpstream runs h as the upstream on loopback.
func startUpstream(tb testing.TB, h http.Handler) *httptest.Server {
	tb.Helper()
	up := httptest.NewServer(h)
	tb.Cleanup(up.Close)
	return up
}

// do sends a request and returns the answer with its body read.
func do(tb testing.TB, method, url string, body string, header http.Header) (*http.Response, string) {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp, string(b)
}

// noRedirect is a client that returns redirects instead of following them.
var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64},
	Timeout:       30 * time.Second,
}

// waitFor polls cond every millisecond until it holds or 10 s pass.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// jsonBody decodes a JSON object body, failing the test if it is not one.
func jsonBody(tb testing.TB, resp *http.Response, body string) map[string]any {
	tb.Helper()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		tb.Fatalf("Content-Type=%q, want application/json; body %q", ct, body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		tb.Fatalf("body %q: %v", body, err)
	}
	return m
}

// discardLogger returns a logger that drops everything.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
