package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/ledger"
)

// serveRead passes a read or static request through to Fava, streaming the
// answer. A read of a ledger holds the ledger's shared lock from before the
// request is sent until Fava's body is fully read or closed, so it never
// sees the file while a write rewrites it.
func (s *Server) serveRead(w http.ResponseWriter, r *http.Request, info *reqInfo, l *ledger.Ledger) {
	if l != nil {
		s.inflight.Add(1)
		defer s.inflight.Done()
		release, err := l.RLock(r.Context())
		if err != nil {
			s.refuse(w, r, info, l.Slug(), favaproxy.KindRead, err)
			return
		}
		info.release = release
		if v, err := l.Version(); err == nil {
			info.etag = v
		}
		defer release() // on every path, including a panic of ReverseProxy
	}
	if l != nil {
		// The answer holds the ledger's shared lock until it is sent: a
		// client that stops reading must not hold it for ever.
		info.sw = stallWriter{ResponseWriter: w, rc: *http.NewResponseController(w), stall: s.cfg.Timeouts.Stall}
		sw := &info.sw
		// Clear the deadline for the next request the connection carries.
		defer sw.rc.SetWriteDeadline(time.Time{})
		w = sw
	}
	s.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), infoKey{}, info)))
}

// stallWriter gives every write of an answer a deadline of stall from its
// start: a client that reads keeps its answer coming, one that stops
// reading for stall has it dropped (ReverseProxy then closes Fava's body,
// which releases the ledger's shared lock).
type stallWriter struct {
	http.ResponseWriter
	rc    http.ResponseController
	stall time.Duration
}

func (w *stallWriter) Write(p []byte) (int, error) {
	_ = w.rc.SetWriteDeadline(time.Now().Add(w.stall))
	return w.ResponseWriter.Write(p)
}

func (w *stallWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// rewrite builds the request to Fava from the client's: upstream scheme,
// host and path (see outPath), the client's Host kept, X-Forwarded-* set,
// the identity header set to the decided user only, a request ID.
func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	info := pr.In.Context().Value(infoKey{}).(*reqInfo)
	out := pr.Out
	out.URL.Scheme, out.URL.Host = s.upstream.Scheme, s.upstream.Host
	out.URL.Path, out.URL.RawPath = s.outPath(pr.In.URL)
	out.Host = pr.In.Host
	setForwarded(out.Header, pr.In, info.trusted)
	s.id.setIdentity(out.Header, info.user)
	out.Header["X-Request-Id"] = []string{info.requestID}
	info.upstreamStart = time.Now()
}

// modifyResponse makes a read's shared lock end when Fava's body does.
func (s *Server) modifyResponse(resp *http.Response) error {
	s.metrics.countUpstreamError(nil, resp.StatusCode)
	// favaproxy's own X-Request-ID is already set on the answer. (Headers
	// here are named in canonical form, so the map is used directly.)
	delete(resp.Header, "X-Request-Id")
	info, _ := resp.Request.Context().Value(infoKey{}).(*reqInfo)
	if info == nil {
		return nil
	}
	s.metrics.Upstream(info.kind, time.Since(info.upstreamStart))
	if info.release != nil {
		info.body = releaseBody{ReadCloser: resp.Body, release: info.release}
		resp.Body = &info.body
	}
	if v := resp.Header["Etag"]; info.etag != "" && resp.StatusCode < 300 && (len(v) == 0 || v[0] == "") {
		// The ledger's version: what a write's If-Match names.
		resp.Header["Etag"] = []string{info.etag}
	}
	if resp.Request.Method == http.MethodGet && strings.HasSuffix(info.cleanPath, "/api/source") {
		// A GET source of a ledger: /<slug>/api/source.
		slug, rest, _ := strings.Cut(strings.TrimPrefix(info.cleanPath, "/"), "/")
		if l := s.bySlug[slug]; l != nil && rest == "api/source" {
			rememberSource(l, resp)
		}
	}
	return nil
}

// rememberSource hands the file text of a GET source answer that passes
// through to its ledger (Ledger.NoteSource), so that a later stale PUT
// source from that version can be merged. The body is buffered (it is one
// small JSON object) and handed on unchanged; past the ledger's limit it
// streams on unread and unremembered.
func rememberSource(l *ledger.Ledger, resp *http.Response) {
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "" {
		return
	}
	limit := l.SourceLimit()
	orig := resp.Body
	b, err := io.ReadAll(io.LimitReader(orig, limit+1))
	if err != nil || int64(len(b)) > limit {
		resp.Body = readCloser{Reader: io.MultiReader(bytes.NewReader(b), orig), Closer: orig}
		return
	}
	orig.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	l.NoteSource(resp.StatusCode, resp.Header, b)
}

// readCloser is a body made of a reader and the closer of another.
type readCloser struct {
	io.Reader
	io.Closer
}

// releaseBody calls release once its body is read to the end or closed.
type releaseBody struct {
	io.ReadCloser
	release func()
	once    sync.Once
}

func (b *releaseBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.release)
	}
	return n, err
}

func (b *releaseBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

// proxyError answers a pass-through request that Fava did not answer: 502
// when it could not be reached, 504 when it did not answer in time; JSON on
// API paths, a short HTML page elsewhere.
func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	info, _ := r.Context().Value(infoKey{}).(*reqInfo)
	if info == nil {
		info = &reqInfo{cleanPath: s.cls.strip(cleanPath(r.URL.Path))}
	}
	if info.release != nil {
		info.release()
	}
	if r.Context().Err() != nil {
		s.log.Debug("client closed the request", "path", r.URL.Path, "status", 499, "request_id", info.requestID)
		return
	}
	err = fava.CallError(err)
	s.metrics.countUpstreamError(err, 0)
	s.log.Warn("pass-through failed", "method", r.Method, "path", r.URL.Path,
		"status", httpStatus(err), "request_id", info.requestID, "err", err)
	s.fail(w, r, info, favaproxy.KindRead, err)
}

// maxRequestID bounds a client's X-Request-ID.
const maxRequestID = 128

// requestID returns the request's X-Request-ID when there is exactly one
// and it is 1 to 128 printable ASCII characters, else a new random one.
func requestID(r *http.Request) string {
	if vs := r.Header.Values("X-Request-ID"); len(vs) == 1 && validRequestID(vs[0]) {
		return vs[0]
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	var h [2 * len(b)]byte
	hex.Encode(h[:], b[:])
	return string(h[:])
}

// validRequestID reports whether v may be used as a request ID: it ends up
// in logs, in the journal and in headers to Fava and back.
func validRequestID(v string) bool {
	if v == "" || len(v) > maxRequestID {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// copyBuffers holds the 32 KiB buffers ReverseProxy copies bodies through,
// so a request does not allocate one.
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// bufferPool is an httputil.BufferPool over copyBuffers.
type bufferPool struct{}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
