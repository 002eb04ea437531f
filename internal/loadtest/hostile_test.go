package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// limitServer answers 413 once a request body passes 1 MiB, as favaproxy's
// body limit should, 400 for a smaller body that is not JSON, else 200.
func limitServer(tb testing.TB) *httptest.Server {
	tb.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		if !json.Valid(body) {
			http.Error(w, "not JSON", http.StatusBadRequest)
			return
		}
		io.WriteString(w, `{"data": "Stored 0 entries."}`)
	}))
	tb.Cleanup(s.Close)
	return s
}

func TestBigBodyGetsTheLimitsAnswer(t *testing.T) {
	s := limitServer(t)
	addr := strings.TrimPrefix(s.URL, "http://")
	for _, chunked := range []bool{false, true} {
		g := newBigBody(chunked)
		t.Run(g.kind(), func(t *testing.T) {
			g.run(context.Background(), addr, "/s/api/add_entries", 100<<20)
			status, sent, err := g.outcome()
			if got, want := status, http.StatusRequestEntityTooLarge; got != want {
				t.Fatalf("status=%d (err %v), want %d", got, err, want)
			}
			if sent >= 100<<20 {
				t.Fatalf("sent all %d bytes before the answer", sent)
			}
		})
	}
}

func TestBigBodySendsAValidBody(t *testing.T) {
	s := limitServer(t)
	addr := strings.TrimPrefix(s.URL, "http://")
	for _, chunked := range []bool{false, true} {
		g := newBigBody(chunked)
		t.Run(g.kind(), func(t *testing.T) {
			g.run(context.Background(), addr, "/s/api/add_entries", 512<<10)
			if status, _, err := g.outcome(); status != http.StatusOK {
				t.Fatalf("status=%d (err %v), want 200 for a body under the limit", status, err)
			}
		})
	}
}

func TestSlowConnsCountServerCloses(t *testing.T) {
	// A server that keeps every connection until the test closes it, so
	// the count right after dialing does not race a server timeout on a
	// loaded machine.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 5)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	sc, err := openSlow(ctx, &wg, ln.Addr().String(), 5, 'a', func(i int) string {
		return fmt.Sprintf("GET /%d HTTP/1.1\r\nHost: x\r\nX-Slow: ", i)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sc.open.Load(), int64(5); got != want {
		t.Fatalf("open=%d right after dialing, want %d", got, want)
	}
	for i := range 5 {
		c := <-accepted
		c.Close()
		want := int64(4 - i)
		deadline := time.Now().Add(10 * time.Second)
		for sc.open.Load() != want {
			if time.Now().After(deadline) {
				t.Fatalf("open=%d 10s after the server closed %d connections, want %d", sc.open.Load(), i+1, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func TestGoClientMeasures(t *testing.T) {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer s.Close()
	res, err := runGoClient(context.Background(), s.URL, 2, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if res.OK == 0 || res.PerSecond <= 0 || res.P50Ms <= 0 || res.Failed != 0 {
		t.Fatalf("ok=%d per_second=%v p50=%v failed=%d, want figures and no failures", res.OK, res.PerSecond, res.P50Ms, res.Failed)
	}
}
