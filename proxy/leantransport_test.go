package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/config"
)

// leanUpstream is a test upstream that counts the connections it accepts.
type leanUpstream struct {
	*httptest.Server
	conns atomic.Int64
}

func newLeanUpstream(tb testing.TB, h http.HandlerFunc) *leanUpstream {
	tb.Helper()
	u := &leanUpstream{}
	u.Server = httptest.NewUnstartedServer(h)
	u.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			u.conns.Add(1)
		}
	}
	u.Start()
	tb.Cleanup(u.Close)
	return u
}

func newTestLean(tb testing.TB, upstream string, headerTimeout time.Duration) *leanTransport {
	tb.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		tb.Fatal(err)
	}
	t := newLeanTransport(u.Host, NewTransport(config.Default().Timeouts), headerTimeout)
	tb.Cleanup(t.CloseIdleConnections)
	return t
}

// leanGet sends a GET of url through t and returns the status and body.
func leanGet(tb testing.TB, t http.RoundTripper, ctx context.Context, method, url string, body io.Reader) (int, string, error) {
	tb.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := t.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestLeanTransport(t *testing.T) {
	ctx := context.Background()
	t.Run("ReadsShareOneConnection", func(t *testing.T) {
		up := newLeanUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "page "+r.URL.Path) })
		lt := newTestLean(t, up.URL, time.Second)
		for i := range 10 {
			status, body, err := leanGet(t, lt, ctx, http.MethodGet, up.URL+"/p", nil)
			if err != nil || status != http.StatusOK || body != "page /p" {
				t.Fatalf("GET %d: %d %q %v", i, status, body, err)
			}
		}
		if got, want := up.conns.Load(), int64(1); got != want {
			t.Fatalf("connections=%d for 10 reads one after another, want %d", got, want)
		}
	})
	t.Run("ChunkedAndConcurrent", func(t *testing.T) {
		up := newLeanUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			for range 3 {
				io.WriteString(w, strings.Repeat("x", 10<<10))
				w.(http.Flusher).Flush()
			}
		})
		lt := newTestLean(t, up.URL, time.Second)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 20 {
					status, body, err := leanGet(t, lt, ctx, http.MethodGet, up.URL+"/", nil)
					if err != nil || status != http.StatusOK || len(body) != 30<<10 {
						t.Errorf("GET: %d, %d bytes, %v", status, len(body), err)
						return
					}
				}
			})
		}
		wg.Wait()
		if got := up.conns.Load(); got > 8 {
			t.Fatalf("connections=%d for 8 concurrent readers, want at most 8", got)
		}
	})
	t.Run("IdleConnectionClosedByUpstreamResent", func(t *testing.T) {
		up := newLeanUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
		lt := newTestLean(t, up.URL, time.Second)
		if _, _, err := leanGet(t, lt, ctx, http.MethodGet, up.URL+"/", nil); err != nil {
			t.Fatal(err)
		}
		up.CloseClientConnections() // the upstream drops the idle connection
		status, body, err := leanGet(t, lt, ctx, http.MethodGet, up.URL+"/", nil)
		if err != nil || status != http.StatusOK || body != "ok" {
			t.Fatalf("GET after the upstream closed the idle connection: %d %q %v, want 200 ok", status, body, err)
		}
	})
	t.Run("BodyNotReadToEndClosesConnection", func(t *testing.T) {
		up := newLeanUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, strings.Repeat("y", 64<<10)) })
		lt := newTestLean(t, up.URL, time.Second)
		req, _ := http.NewRequest(http.MethodGet, up.URL+"/", nil)
		resp, err := lt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Read(make([]byte, 10))
		resp.Body.Close()
		status, body, err := leanGet(t, lt, ctx, http.MethodGet, up.URL+"/", nil)
		if err != nil || status != http.StatusOK || len(body) != 64<<10 {
			t.Fatalf("GET after an unread body: %d, %d bytes, %v", status, len(body), err)
		}
		if got, want := up.conns.Load(), int64(2); got != want {
			t.Fatalf("connections=%d, want %d (the half-read one is not reused)", got, want)
		}
	})
	t.Run("ConnectionClose", func(t *testing.T) {
		up := newLeanUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			io.WriteString(w, "bye")
		})
		lt := newTestLean(t, up.URL, time.Second)
		for range 3 {
			if status, body, err := leanGet(t, lt, ctx, http.MethodGet, up.URL+"/", nil); err != nil || status != http.StatusOK || body != "bye" {
				t.Fatalf("GET: %d %q %v", status, body, err)
			}
		}
		if got, want := up.conns.Load(), int64(3); got != want {
			t.Fatalf("connections=%d, want %d (one per answer with Connection: close)", got, want)
		}
	})
	t.Run("ClientGoneEndsWait", func(t *testing.T) {
		release := make(chan struct{})
		up := newLeanUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		defer close(release)
		lt := newTestLean(t, up.URL, time.Minute)
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(50*time.Millisecond, cancel)
		start := time.Now()
		_, _, err := leanGet(t, lt, cctx, http.MethodGet, up.URL+"/", nil)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err=%v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("returned after %v, want soon after the cancel", d)
		}
	})
	t.Run("HeaderTimeout", func(t *testing.T) {
		release := make(chan struct{})
		up := newLeanUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		defer close(release)
		lt := newTestLean(t, up.URL, 50*time.Millisecond)
		_, _, err := leanGet(t, lt, ctx, http.MethodGet, up.URL+"/", nil)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("err=%v, want a timeout", err)
		}
	})
	t.Run("RequestWithBodyFallsBack", func(t *testing.T) {
		up := newLeanUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			io.WriteString(w, r.Method+" "+string(b))
		})
		lt := newTestLean(t, up.URL, time.Second)
		status, body, err := leanGet(t, lt, ctx, http.MethodPut, up.URL+"/", strings.NewReader("data"))
		if err != nil || status != http.StatusOK || body != "PUT data" {
			t.Fatalf("PUT: %d %q %v, want 200 %q", status, body, err, "PUT data")
		}
	})
	t.Run("OtherMethodsFallBack", func(t *testing.T) {
		// A bodiless DELETE is not a read: it must never be sent twice, so
		// it takes http.Transport's way (a connection of its own here).
		up := newLeanUpstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Method) })
		lt := newTestLean(t, up.URL, time.Second)
		if _, _, err := leanGet(t, lt, ctx, http.MethodGet, up.URL+"/", nil); err != nil {
			t.Fatal(err)
		}
		status, body, err := leanGet(t, lt, ctx, http.MethodDelete, up.URL+"/", nil)
		if err != nil || status != http.StatusOK || body != "DELETE" {
			t.Fatalf("DELETE: %d %q %v", status, body, err)
		}
		if got, want := up.conns.Load(), int64(2); got != want {
			t.Fatalf("connections=%d, want %d (the DELETE on the fallback's own)", got, want)
		}
	})
	t.Run("HeadHasNoBody", func(t *testing.T) {
		up := newLeanUpstream(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5")
			if r.Method == http.MethodGet {
				io.WriteString(w, "hello")
			}
		})
		lt := newTestLean(t, up.URL, time.Second)
		for _, m := range []string{http.MethodHead, http.MethodGet, http.MethodHead, http.MethodGet} {
			status, body, err := leanGet(t, lt, ctx, m, up.URL+"/", nil)
			want := "hello"
			if m == http.MethodHead {
				want = ""
			}
			if err != nil || status != http.StatusOK || body != want {
				t.Fatalf("%s: %d %q %v, want 200 %q", m, status, body, err, want)
			}
		}
		if got, want := up.conns.Load(), int64(1); got != want {
			t.Fatalf("connections=%d, want %d", got, want)
		}
	})
}
