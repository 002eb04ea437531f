package loadtest

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// goProxy is a bare net/http/httputil.ReverseProxy in this process: the
// floor of any Go proxy's cost, which separates what favaproxy adds (locks,
// classification, identity, logging) from what net/http costs.
type goProxy struct {
	srv  *http.Server
	addr string
	done chan struct{}
}

func (g *goProxy) url() string { return "http://" + g.addr }

// startGoProxy serves a reverse proxy to upstream (a base URL) on a free
// loopback port, with a keepalive pool as large as favaproxy's.
func startGoProxy(upstream string) (*goProxy, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(u); r.SetXForwarded() },
		Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second},
		// wrk drops its connections mid-request when a run ends; those
		// aborted requests are not worth a line each.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g := &goProxy{srv: &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second},
		addr: ln.Addr().String(), done: make(chan struct{})}
	go func() {
		defer close(g.done)
		// Serve returns ErrServerClosed after stop; any other failure shows
		// up as failed requests in the run.
		_ = g.srv.Serve(ln)
	}()
	return g, nil
}

func (g *goProxy) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = g.srv.Shutdown(ctx)
	<-g.done
}
