// Command benchserve runs favabench's baselines, each in a process of its
// own so that its CPU time can be read from /proc like favaproxy's:
//
//	benchserve proxy -listen ADDR -upstream URL
//	    a bare net/http/httputil.ReverseProxy, with favaproxy's transport
//	    (proxy.NewTransport with the default timeouts) and, like
//	    favaproxy, a pool of copy buffers
//	benchserve floor -listen ADDR -upstream URL
//	    the leanest net/http forwarder of a GET: no ReverseProxy, router,
//	    lock or metrics (floor.go)
//	benchserve relay -listen ADDR -upstream URL
//	    a TCP relay that knows nothing of HTTP (floor.go)
//	benchserve static -listen ADDR PATH=FILE...
//	    a static upstream: GET PATH answers FILE's bytes, as text/html for
//	    a .html file and application/json otherwise; other paths 404
//
// Each logs "listening addr=HOST:PORT" once it accepts connections, and
// stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/proxy"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benchserve:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: benchserve proxy|floor|relay|static [flags]")
	}
	fs := flag.NewFlagSet("benchserve "+args[0], flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on")
	upstream := fs.String("upstream", "", "proxy: upstream base URL")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var u *url.URL
	if args[0] != "static" {
		var err error
		if u, err = url.Parse(*upstream); err != nil || u.Scheme != "http" || u.Host == "" {
			return fmt.Errorf("%s: bad -upstream %q", args[0], *upstream)
		}
	}
	var h http.Handler
	switch args[0] {
	case "proxy":
		h = &httputil.ReverseProxy{
			Rewrite:    func(r *httputil.ProxyRequest) { r.SetURL(u); r.SetXForwarded() },
			Transport:  proxy.NewTransport(config.Default().Timeouts),
			BufferPool: &bufferPool{},
			// wrk drops its connections mid-request when a run ends; those
			// aborted requests are not worth a line each.
			ErrorLog: log.New(io.Discard, "", 0),
		}
	case "floor":
		h = &floor{host: u.Host}
	case "relay":
		return serveRelay(*listen, u.Host)
	case "static":
		s, err := newStatic(fs.Args())
		if err != nil {
			return err
		}
		h = s
	default:
		return fmt.Errorf("unknown server %q", args[0])
	}
	return serve(*listen, h)
}

// serve serves h on addr until SIGINT or SIGTERM.
func serve(addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	slog.Info("listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// serveRelay relays connections on addr to upstream (host:port) until
// SIGINT or SIGTERM.
func serveRelay(addr, upstream string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	slog.Info("listening", "addr", ln.Addr().String())
	return relay(ln, upstream)
}

// static answers GETs of its paths with fixed bodies.
type static map[string]staticBody

type staticBody struct {
	contentType string
	body        []byte
}

func newStatic(args []string) (static, error) {
	s := static{}
	for _, a := range args {
		path, file, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("static: %q is not PATH=FILE", a)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		ct := "application/json"
		if filepath.Ext(file) == ".html" {
			ct = "text/html; charset=utf-8"
		}
		s[path] = staticBody{contentType: ct, body: b}
	}
	return s, nil
}

func (s static) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, ok := s[r.URL.Path]
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.NotFound(w, r)
		return
	}
	w.Header()["Content-Type"] = []string{b.contentType}
	w.Write(b.body)
}

// bufferPool lends ReverseProxy its 32 KiB copy buffers, as favaproxy's
// does, so that the baseline does not allocate one per request.
type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, 32<<10)
}

func (b *bufferPool) Put(buf []byte) { b.p.Put(&buf) }
