// Package proxy is favaproxy's HTTP server: it passes every request through
// to Fava, streaming reads under a ledger's shared lock and serializing
// writes under its exclusive lock, after a per-user lock. It is the only
// package that knows the web framework (echo).
//
// URL space: favaproxy serves the same paths as Fava. When Fava runs under a
// path prefix P (the upstream URL's path, fava --prefix P), favaproxy accepts
// requests both with and without P, so Fava's own links and redirects (which
// contain P) work unchanged, and forwards every request to P + the path
// without P. favaproxy's own endpoints (/livez, /readyz, /healthz) are at
// the root. Redirects and their Location headers pass untouched.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v5"
	"golang.org/x/sync/semaphore"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/auth"
	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/ledger"
	"github.com/favaproxy/favaproxy/lock"
)

// Options are what New needs besides the configuration.
type Options struct {
	// Logger receives every log line. Nil means slog.Default().
	Logger *slog.Logger
	// NewLocker opens a ledger's lock; hooks count the events of a lock
	// on etcd in the server's metrics. Nil, or a nil Locker, means an
	// in-process readers–writer lock per ledger, which excludes nothing
	// outside this process (lock.backend none).
	NewLocker func(l config.Ledger, hooks lock.EtcdHooks) (ledger.Locker, error)
	// Transport carries requests to Fava. Nil means an *http.Transport
	// tuned from cfg.Timeouts (NewTransport; without keep-alive for
	// writes), which reads reach through leanTransport: bodiless reads
	// are sent on the caller's goroutine over its connection settings.
	Transport http.RoundTripper
	// ReadyChecks are further readiness checks, by name, that /readyz runs
	// besides its own; for example "fava" when favaproxy runs Fava itself.
	ReadyChecks map[string]func(context.Context) error
	// AdjustLedger, if set, adjusts the options of each ledger before it
	// opens (tests replace the retry clock).
	AdjustLedger func(*ledger.Options)
	// UpstreamRestarts, if set, counts restarts of a Fava that favaproxy
	// runs itself; it is exported as favaproxy_upstream_restarts_total.
	UpstreamRestarts func() int
}

// Server is favaproxy's HTTP server. Create it with New.
type Server struct {
	cfg      config.Config
	log      *slog.Logger
	upstream *url.URL // scheme and host of Fava
	// prefix and prefixEsc are Fava's path prefix, decoded and escaped,
	// without a trailing slash ("" for none).
	prefix, prefixEsc string
	cls               classifier
	id                *identifier
	authn             auth.Authenticator // nil: no authentication inside favaproxy
	roles             auth.Roles
	metrics           *metrics // nil when metrics.disabled

	ledgers []*ledger.Ledger
	bySlug  map[string]*ledger.Ledger

	transport      http.RoundTripper // reads and health checks
	writeTransport http.RoundTripper // writes: no keep-alive, so never resent
	rp             *httputil.ReverseProxy
	readyChecks    map[string]func(context.Context) error
	e              *echo.Echo
	srv            *http.Server

	// buffers bounds the write bodies held in memory (limits.buffer_bytes).
	buffers *semaphore.Weighted

	// inflight counts requests that hold or wait for a lock, so Serve
	// returns only once every lock is released.
	inflight sync.WaitGroup

	// mu guards ln and closed.
	mu     sync.Mutex
	ln     net.Listener
	closed bool
}

// New returns a server for cfg, which must have passed cfg.Validate. It
// resolves every ledger's slug as Fava does (config.Ledger.Slug when given,
// else from the title option or the file path, made unique in order) and
// opens every ledger (ledger.Open). Serve closes them when it returns; a
// server that is never served is closed with Close.
func New(cfg config.Config, o Options) (*Server, error) {
	s := &Server{cfg: cfg, log: o.Logger, transport: o.Transport, readyChecks: o.ReadyChecks,
		buffers: semaphore.NewWeighted(cfg.Limits.BufferBytes)}
	if s.log == nil {
		s.log = slog.Default()
	}
	u, err := cfg.UpstreamURL()
	if err != nil {
		return nil, err
	}
	s.upstream = &url.URL{Scheme: u.Scheme, Host: u.Host}
	s.prefix = strings.TrimSuffix(u.Path, "/")
	s.prefixEsc = strings.TrimSuffix(u.EscapedPath(), "/")
	trusted, err := cfg.TrustedPrefixes()
	if err != nil {
		return nil, err
	}
	s.id = newIdentifier(cfg.Identity.Header, trusted)
	if s.authn, err = newAuthenticator(cfg.Auth); err != nil {
		return nil, err
	}
	s.roles = auth.NewRoles(cfg.Auth.ReadOnlyUsers, cfg.ReadOnly)
	if !cfg.Metrics.Disabled {
		s.metrics = newMetrics()
		if o.UpstreamRestarts != nil {
			if err := s.metrics.countUpstreamRestarts(o.UpstreamRestarts); err != nil {
				return nil, err
			}
		}
	}

	if s.transport == nil {
		t := NewTransport(cfg.Timeouts)
		wt := t.Clone()
		wt.DisableKeepAlives = true
		s.writeTransport = wt
		s.transport = newLeanTransport(s.upstream.Host, t, cfg.Timeouts.Upstream)
	} else {
		s.writeTransport = s.transport
	}
	if err := s.openLedgers(cfg, o); err != nil {
		return nil, err
	}
	s.rp = &httputil.ReverseProxy{
		Rewrite:   s.rewrite,
		Transport: s.transport,
		// Zero: ReverseProxy still flushes every write of an answer of
		// unknown length (streamed, or text/event-stream) at once, and
		// sends one of known length through the connection's buffer, in
		// as few writes as its size allows. -1 flushed every 32 KiB copy of
		// a small page on its own, a system call and a packet more per read.
		FlushInterval:  0,
		ModifyResponse: s.modifyResponse,
		BufferPool:     bufferPool{},
		ErrorHandler:   s.proxyError,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.e = s.newEcho()
	s.srv = &http.Server{
		Handler:           s.instrument(upperMethod(s.e)),
		ReadHeaderTimeout: cfg.Timeouts.ReadHeader,
		ReadTimeout:       cfg.Timeouts.Read,
		IdleTimeout:       cfg.Timeouts.Idle,
		MaxHeaderBytes:    cfg.Limits.HeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// openLedgers resolves the ledgers' slugs and opens each ledger with its
// lock. On failure it closes the ledgers it opened.
func (s *Server) openLedgers(cfg config.Config, o Options) error {
	slugs, err := resolveSlugs(cfg.Ledgers)
	if err != nil {
		return err
	}
	s.bySlug = make(map[string]*ledger.Ledger, len(slugs))
	s.cls = classifier{prefix: s.prefix, slugs: make(map[string]bool, len(slugs))}
	client := &fava.Client{Transport: s.writeTransport, Observer: s.metrics}
	for i, lc := range cfg.Ledgers {
		var lk ledger.Locker
		if o.NewLocker != nil {
			if lk, err = o.NewLocker(lc, s.metrics.lockHooks(slugs[i])); err != nil {
				_ = s.Close(context.Background())
				return fmt.Errorf("open lock of ledger %s: %w", lc.File, err)
			}
		}
		api := &url.URL{Scheme: s.upstream.Scheme, Host: s.upstream.Host, Path: s.prefix + "/" + slugs[i] + "/api/"}
		lo := ledger.Options{Slug: slugs[i], APIBase: api, Client: client, Locker: lk, Metrics: s.metrics, Logger: s.log}
		if o.AdjustLedger != nil {
			o.AdjustLedger(&lo)
		}
		l, err := ledger.Open(context.Background(), cfg, lc, lo)
		if err != nil {
			_ = s.Close(context.Background())
			return err
		}
		s.ledgers = append(s.ledgers, l)
		s.bySlug[slugs[i]] = l
		s.cls.slugs[slugs[i]] = true
		s.metrics.addLedger(slugs[i])
	}
	return nil
}

// Close closes the server's ledgers, waiting while ctx lasts for their
// writes in progress. Serve does it when it returns; call Close for a
// server that is never served. Only the first call counts.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	var errs []error
	for _, l := range s.ledgers {
		errs = append(errs, l.Close(ctx))
	}
	return errors.Join(errs...)
}

// upperMethod refuses a request whose method is not upper-case with 400,
// before anything looks at it, as Fava's server (cheroot) does: otherwise
// "put" could be checked as something other than the PUT a server that
// upper-cases methods (werkzeug's) would execute.
func upperMethod(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.ToUpper(r.Method) != r.Method {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "the method must be upper-case, as Fava's server requires"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// resolveSlugs returns the slug of every ledger: the configured one, or the
// one Fava derives, made unique as Fava does in load order.
func resolveSlugs(ls []config.Ledger) ([]string, error) {
	derived := make([]string, len(ls))
	for i, l := range ls {
		if l.Slug != "" {
			derived[i] = l.Slug
			continue
		}
		title, err := beancount.ReadTitle(l.File)
		if err != nil {
			return nil, fmt.Errorf("read title of ledger %s: %w", l.File, err)
		}
		derived[i] = beancount.LedgerSlug(title, l.File)
	}
	out := beancount.UniqueSlugs(derived)
	seen := make(map[string]int, len(out))
	for i, l := range ls {
		if l.Slug != "" {
			out[i] = l.Slug
		}
		if out[i] == "" {
			return nil, fmt.Errorf("ledger %s: empty slug", l.File)
		}
		if j, dup := seen[out[i]]; dup {
			return nil, fmt.Errorf("ledgers %s and %s: both have slug %q", ls[j].File, l.File, out[i])
		}
		seen[out[i]] = i
	}
	return out, nil
}

// NewTransport returns the transport to Fava: bounded dial and header
// waits, no environment proxy, no transparent gzip (answers pass as Fava
// sent them), and enough idle connections for concurrent clients (64 per
// host: net/http's default of 2 would open and close a connection for most
// requests of 16 concurrent clients). favabench's bare ReverseProxy uses it
// too, so that the two are compared on equal terms.
func NewTransport(t config.Timeouts) *http.Transport {
	d := &net.Dialer{Timeout: t.Dial, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ResponseHeaderTimeout: t.Upstream,
		DisableCompression:    true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// newEcho builds the router: favaproxy's own endpoints, and every other
// path and method to dispatch.
func (s *Server) newEcho() *echo.Echo {
	e := echo.NewWithConfig(echo.Config{
		Logger: s.log,
		// Identity and X-Forwarded-* trust are decided on the TCP peer,
		// never on a header.
		IPExtractor:      echo.ExtractIPDirect(),
		HTTPErrorHandler: s.echoError,
	})
	get := []string{http.MethodGet, http.MethodHead}
	e.Match(get, PathLivez, s.livez)
	e.Match(get, PathReadyz, s.readyz)
	e.Match(get, PathHealthz, s.readyz)
	e.Match(get, PathMetrics, echo.WrapHandler(s.metrics.metricsHandler()))
	e.Any("/*", s.dispatch)
	e.RouteNotFound("/*", s.dispatch)
	return e
}

// echoError answers errors that reach echo (its own 404/405, or an error a
// handler returned) as JSON.
func (s *Server) echoError(c *echo.Context, err error) {
	if resp, uerr := echo.UnwrapResponse(c.Response()); uerr == nil && resp.Committed {
		return
	}
	var fe *favaproxy.Error
	if !errors.As(err, &fe) {
		if code := echo.StatusCode(err); code != 0 {
			writeJSON(c.Response(), code, map[string]string{"error": strings.ToLower(http.StatusText(code))})
			return
		}
		s.log.Error("handler failed", "err", err)
	}
	writeJSONError(c.Response(), err)
}

// Handler returns the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.srv.Handler }

// Listen binds cfg.Listen, so that a bind error surfaces before Serve, and
// logs "listening" with the bound address.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return errors.New("listen: already listening")
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	s.ln = ln
	s.log.Info("listening", "addr", ln.Addr().String())
	return nil
}

// Addr returns the bound address, or "" before Listen.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Serve serves until ctx is done (calling Listen first if needed), then shuts
// down: it stops accepting, lets in-flight requests finish within
// cfg.ShutdownGrace, closes what is left, and returns once every lock taken
// by a request is released. A write already forwarded to Fava still
// completes (bounded by timeouts.upstream).
func (s *Server) Serve(ctx context.Context) error {
	if s.Addr() == "" {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()

	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(ln) }()

	var err error
	select {
	case err = <-errc:
		// The server failed by itself; nothing left to shut down.
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownGrace)
		err = s.srv.Shutdown(sctx)
		cancel()
		if err != nil {
			// Grace is over: close connections, which cancels the
			// requests still waiting for a lock.
			err = fmt.Errorf("shutdown: %w", err)
			_ = s.srv.Close()
		}
		if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
			err = serr
		}
	}
	s.inflight.Wait()
	if cerr := s.Close(context.WithoutCancel(ctx)); err == nil {
		err = cerr
	}
	for _, t := range []http.RoundTripper{s.transport, s.writeTransport} {
		if c, ok := t.(interface{ CloseIdleConnections() }); ok {
			c.CloseIdleConnections()
		}
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// reqInfo is what dispatch decided about a request, for the functions that
// forward it.
type reqInfo struct {
	user      favaproxy.User
	trusted   bool // the TCP peer is a trusted proxy
	requestID string
	cleanPath string // the classified path, prefix stripped
	kind      favaproxy.Kind
	// upstreamStart is when the request was sent to Fava.
	upstreamStart time.Time
	// release gives up the shared lock of a read; nil for static requests.
	release func()
	// etag is the ledger's version while a read holds its shared lock,
	// sent as the answer's ETag when Fava sets none.
	etag string
	// sw and body are a read's answer writer and Fava's body, kept here
	// so that a read allocates them with its reqInfo.
	sw   stallWriter
	body releaseBody
}

type infoKey struct{}

// dispatch classifies a request and hands it to the read or write path.
func (s *Server) dispatch(c *echo.Context) error {
	r, w := c.Request(), c.Response()
	slug, kind := s.cls.route(r.Method, r.URL.Path)
	trusted := s.id.trustedPeer(r)
	info := &reqInfo{trusted: trusted, requestID: requestID(r), cleanPath: s.cls.strip(cleanPath(r.URL.Path)), kind: kind}
	w.Header()["X-Request-Id"] = []string{info.requestID}
	user, err := s.who(r, trusted)
	if err != nil {
		setChallenge(w, err)
		s.refuse(w, r, info, slug, kind, err)
		return nil
	}
	info.user = user
	if kind.IsWrite() {
		s.serveWrite(w, r, info, slug, kind)
		return nil
	}
	l := s.bySlug[slug]
	if l != nil {
		if name, ok := strings.CutPrefix(info.cleanPath, "/"+slug+"/api/"); ok {
			if err := l.CheckRead(name, r.URL.RawQuery); err != nil {
				s.refuse(w, r, info, slug, kind, err)
				return nil
			}
		}
	}
	s.serveRead(w, r, info, l)
	return nil
}

// fail answers a refused request: JSON for writes and API paths, a short
// HTML page for pages.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, info *reqInfo, kind favaproxy.Kind, err error) {
	if favaproxy.ErrorCode(err) == favaproxy.ECanceled {
		return // nobody is listening
	}
	s.metrics.rejectErr(err)
	if kind.IsWrite() || isAPIPath(info.cleanPath) {
		writeJSONError(w, err)
		return
	}
	writeHTMLError(w, err)
}

// outPath returns the path and raw path to send to Fava for a request URL:
// the upstream prefix + the request's path without that prefix. A path that
// cleanPath changes is sent cleaned, so that Fava routes exactly the path
// that was classified; any other is sent with its original escaping.
func (s *Server) outPath(u *url.URL) (path, rawPath string) {
	p := u.Path
	if c := cleanPath(p); c != p {
		return s.prefix + s.cls.strip(c), ""
	}
	if s.prefix == "" || s.cls.strip(p) != p {
		return u.Path, u.RawPath
	}
	if u.RawPath == "" {
		return s.prefix + p, ""
	}
	return s.prefix + p, s.prefixEsc + u.RawPath
}

// setForwarded sets X-Forwarded-For, -Host and -Proto on h (a request to
// Fava). The values a client sent are kept only when its TCP peer is a
// trusted proxy; otherwise they are replaced by what favaproxy sees.
func setForwarded(h http.Header, in *http.Request, trusted bool) {
	prior := in.Header.Values("X-Forwarded-For")
	host, proto := in.Header.Get("X-Forwarded-Host"), in.Header.Get("X-Forwarded-Proto")
	h.Del("Forwarded")
	if !trusted {
		prior, host, proto = nil, "", ""
	}
	if ap, err := netip.ParseAddrPort(in.RemoteAddr); err == nil {
		ip := ap.Addr().Unmap().String()
		if len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		h.Set("X-Forwarded-For", ip)
	} else {
		h.Del("X-Forwarded-For")
	}
	if host == "" {
		host = in.Host
	}
	if proto == "" {
		proto = "http"
		if in.TLS != nil {
			proto = "https"
		}
	}
	h.Set("X-Forwarded-Host", host)
	h.Set("X-Forwarded-Proto", proto)
}
