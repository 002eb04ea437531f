package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// leanTransport carries bodiless GET, HEAD and OPTIONS requests (the reads)
// to one upstream over HTTP/1.1 keep-alive connections, writing the request
// and reading the answer on the caller's goroutine. http.Transport hands every request to a
// writer goroutine and every answer back from a reader goroutine of the
// connection, four goroutine switches per request, which on a small
// machine cost as much as the rest of a read. The protocol itself is
// net/http's: http.Request.Write frames the request and http.ReadResponse
// parses the answer. Anything else (another method, a body, an upgrade,
// another host or scheme) goes to the fallback http.Transport.
type leanTransport struct {
	host     string // upstream host:port; only "http" requests to it
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	fallback *http.Transport
	// headerTimeout bounds the wait for an answer's header.
	headerTimeout time.Duration
	maxIdle       int

	// mu guards idle, the connections ready for a request, most recent
	// last.
	mu   sync.Mutex
	idle []*leanConn
}

// leanConn is a connection to the upstream with its buffers.
type leanConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

// newLeanTransport returns a leanTransport to host (host:port) that dials
// and falls back as fallback does and keeps as many idle connections as it
// keeps per host.
func newLeanTransport(host string, fallback *http.Transport, headerTimeout time.Duration) *leanTransport {
	t := &leanTransport{host: host, dial: fallback.DialContext, fallback: fallback,
		headerTimeout: headerTimeout, maxIdle: fallback.MaxIdleConnsPerHost}
	if t.dial == nil {
		t.dial = (&net.Dialer{}).DialContext
	}
	return t
}

// leanMethod reports whether requests of method go the lean way: the
// methods of reads, which may be sent again on a new connection.
func leanMethod(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// RoundTrip implements http.RoundTripper.
func (t *leanTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !leanMethod(req.Method) || req.URL.Scheme != "http" || req.URL.Host != t.host ||
		(req.Body != nil && req.Body != http.NoBody) || req.Header.Get("Upgrade") != "" || req.Header.Get("Expect") != "" {
		return t.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	for {
		lc, reused, err := t.get(ctx)
		if err != nil {
			return nil, err
		}
		resp, stale, err := t.roundTrip(ctx, lc, req)
		if err == nil {
			return resp, nil
		}
		lc.c.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		// An idle connection the upstream closed fails before any byte of
		// an answer: send the request again, on another connection. The
		// requests here are bodiless reads, which may be sent again (as
		// http.Transport does for idempotent requests).
		if !reused || !stale {
			return nil, err
		}
	}
}

// aLongTimeAgo is a deadline that has passed: it ends any wait on a
// connection at once.
var aLongTimeAgo = time.Unix(1, 0)

// roundTrip sends req on lc and reads the answer's header. stale reports
// that the connection failed before the upstream answered anything.
func (t *leanTransport) roundTrip(ctx context.Context, lc *leanConn, req *http.Request) (resp *http.Response, stale bool, err error) {
	// A request that ends (the client left) ends the wait on the
	// connection, which is then closed rather than kept.
	stop := context.AfterFunc(ctx, func() { _ = lc.c.SetDeadline(aLongTimeAgo) })
	defer func() {
		if err != nil {
			stop()
		}
	}()
	if err := req.Write(lc.bw); err != nil {
		return nil, true, fmt.Errorf("write request: %w", err)
	}
	if err := lc.bw.Flush(); err != nil {
		return nil, true, fmt.Errorf("write request: %w", err)
	}
	if t.headerTimeout > 0 {
		_ = lc.c.SetReadDeadline(time.Now().Add(t.headerTimeout))
	}
	if _, err := lc.br.Peek(1); err != nil {
		var ne net.Error
		return nil, !(errors.As(err, &ne) && ne.Timeout()), fmt.Errorf("read response: %w", err)
	}
	for {
		resp, err = http.ReadResponse(lc.br, req)
		if err != nil {
			return nil, false, fmt.Errorf("read response: %w", err)
		}
		// Informational answers (100 Continue, 103 Early Hints) precede
		// the final one.
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
	}
	if t.headerTimeout > 0 {
		_ = lc.c.SetReadDeadline(time.Time{})
		if ctx.Err() != nil { // the request ended meanwhile: keep its wait ended
			_ = lc.c.SetDeadline(aLongTimeAgo)
		}
	}
	resp.Body = &leanBody{ReadCloser: resp.Body, t: t, lc: lc, stop: stop, reuse: !resp.Close && !req.Close}
	return resp, false, nil
}

// get returns an idle connection, or a new one.
func (t *leanTransport) get(ctx context.Context) (lc *leanConn, reused bool, err error) {
	t.mu.Lock()
	if n := len(t.idle); n > 0 {
		lc = t.idle[n-1]
		t.idle = t.idle[:n-1]
		t.mu.Unlock()
		return lc, true, nil
	}
	t.mu.Unlock()
	c, err := t.dial(ctx, "tcp", t.host)
	if err != nil {
		return nil, false, err
	}
	return &leanConn{c: c, br: bufio.NewReader(c), bw: bufio.NewWriter(c)}, false, nil
}

// put keeps lc for another request, or closes it when enough are kept.
func (t *leanTransport) put(lc *leanConn) {
	t.mu.Lock()
	if len(t.idle) < t.maxIdle {
		t.idle = append(t.idle, lc)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	lc.c.Close()
}

// CloseIdleConnections closes the kept connections.
func (t *leanTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, lc := range idle {
		lc.c.Close()
	}
	t.fallback.CloseIdleConnections()
}

// leanBody is an answer's body: read to its end, it hands the connection
// back for another request; closed before, it closes the connection.
type leanBody struct {
	io.ReadCloser
	t     *leanTransport
	lc    *leanConn
	stop  func() bool
	reuse bool
	done  bool
}

func (b *leanBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.finish(true)
	} else if err != nil {
		b.finish(false)
	}
	return n, err
}

func (b *leanBody) Close() error {
	b.finish(false)
	return nil
}

func (b *leanBody) finish(atEOF bool) {
	if b.done {
		return
	}
	b.done = true
	stopped := b.stop()
	if atEOF && b.reuse && stopped {
		b.t.put(b.lc)
		return
	}
	b.lc.c.Close()
}
