package main

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
)

// floor is the least a net/http server can do to forward a GET: the
// handler writes the request to a kept-alive upstream connection with
// http.Request.Write, reads the answer with http.ReadResponse and copies it
// back, all on its own goroutine, with no ReverseProxy, router, lock,
// metrics or header rewriting. It forwards only what favabench sends
// (bodiless requests to one upstream) and answers 502 on any failure. What
// it costs is net/http's server and Go's runtime, the floor under any
// proxy built on them, favaproxy included.
type floor struct {
	host string // upstream host:port

	// mu guards idle, the upstream connections ready for a request.
	mu   sync.Mutex
	idle []*floorConn
}

type floorConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func (f *floor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fc, err := f.get()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme, out.URL.Host, out.Host = "http", f.host, f.host
	err = out.Write(fc.bw)
	if err == nil {
		err = fc.bw.Flush()
	}
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(fc.br, out)
	}
	if err != nil {
		fc.c.Close()
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, err = io.Copy(w, resp.Body)
	if cerr := resp.Body.Close(); err == nil && cerr == nil && !resp.Close {
		f.put(fc)
		return
	}
	fc.c.Close()
}

// get returns an idle upstream connection or dials a new one.
func (f *floor) get() (*floorConn, error) {
	f.mu.Lock()
	if n := len(f.idle); n > 0 {
		fc := f.idle[n-1]
		f.idle = f.idle[:n-1]
		f.mu.Unlock()
		return fc, nil
	}
	f.mu.Unlock()
	c, err := net.Dial("tcp", f.host)
	if err != nil {
		return nil, err
	}
	return &floorConn{c: c, br: bufio.NewReader(c), bw: bufio.NewWriter(c)}, nil
}

func (f *floor) put(fc *floorConn) {
	f.mu.Lock()
	f.idle = append(f.idle, fc)
	f.mu.Unlock()
}

// relay copies bytes between each accepted connection and a connection of
// its own to the upstream, knowing nothing of HTTP: what a Go process costs
// to stand between client and upstream below net/http, one goroutine per
// direction (io.Copy splices between TCP sockets on Linux).
func relay(ln net.Listener, upstream string) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				slog.Warn("relay: dial upstream", "err", err)
				return
			}
			defer u.Close()
			go func() {
				io.Copy(u, c)
				u.(*net.TCPConn).CloseWrite()
			}()
			io.Copy(c, u)
		}()
	}
}
