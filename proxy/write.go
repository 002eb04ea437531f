package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/favaproxy/favaproxy"
)

// maxWriteAnswer bounds the body of Fava's answer to a write that favaproxy
// buffers; Fava's answers to writes are a few hundred bytes.
const maxWriteAnswer = 16 << 20

// writeRequest is one write as favaproxy handles it: the client's request,
// buffered and stripped of what Fava must not see, plus who sent it and
// where it goes. Handlers may read every field; the timing fields are
// filled in as the write proceeds, for its log line.
type writeRequest struct {
	ledger *ledger
	kind   favaproxy.Kind
	user   favaproxy.User
	// method is the client's method, upper-cased.
	method string
	// url is the absolute URL at Fava: prefix + cleaned path, and query.
	url *url.URL
	// host is the Host header to send (the client's).
	host string
	// header is the header to send: hop-by-hop headers, every variant of
	// the identity header and the idempotency key header removed; the
	// identity header, X-Forwarded-* and X-Request-ID set.
	header http.Header
	// body is the client's whole body.
	body []byte
	// idempotencyKey is the raw value of the idempotency header, "" for
	// none. It is never forwarded.
	idempotencyKey string
	requestID      string
	// add is the prepared add_entries request (addentries.go), nil for
	// other writes.
	add *addRequest

	// waitStart is when the write began to wait for its locks.
	waitStart time.Time
	// lockWait is how long it waited for the user and ledger locks.
	lockWait time.Duration
	// upstreamTime is the time spent in calls to Fava.
	upstreamTime time.Duration
	// batchSize is the number of client writes in the call to Fava that
	// carried this one: 1 for a write forwarded alone, 0 for one never
	// forwarded. A batching handler sets it on every member.
	batchSize int
	// dequeue takes the write out of its ledger's queue count, once.
	dequeue func()
	// audit holds the checksums of the ledger's files for the write's
	// journal record (audit.go); nil until the ledger lock is taken.
	audit *auditState
}

// writeResponse is an answer to a write, sent to the client as it is.
type writeResponse struct {
	status int
	header http.Header
	body   []byte
}

// A writeHandler carries out one write. It is called with the user's lock
// held and takes the ledger lock itself (through s.underLedgerLock or, for
// a handler that must release it between attempts, s.lockLedger), because
// group commit and conflict retries need to control when that happens. ctx
// ends when the lock wait is over (lock_timeout) or the client leaves; work
// done under the ledger lock must not depend on it.
type writeHandler func(ctx context.Context, wr *writeRequest) (*writeResponse, error)

// writeHandlers returns the handler of each kind of write. add_entries
// (group commit, idempotency), source and source_slice (conflict
// resolution) and add_account have handlers of their own, in their own
// files; documents, imports and any other write are forwarded as they are.
func (s *Server) writeHandlers() map[favaproxy.Kind]writeHandler {
	fwd := s.underLedgerLock(s.forward)
	return map[favaproxy.Kind]writeHandler{
		favaproxy.KindAddEntries: s.handleAddEntries,
		favaproxy.KindAddAccount: s.addAccount,
		favaproxy.KindSource:     s.putSource,
		favaproxy.KindSlice:      s.editSlice,
		favaproxy.KindDocument:   fwd,
		favaproxy.KindImport:     fwd,
		favaproxy.KindWrite:      fwd,
	}
}

// bodyLimit returns the most bytes a write's body may have.
func (s *Server) bodyLimit(kind favaproxy.Kind, r *http.Request, cleanPath string) int64 {
	l := s.cfg.Limits
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch {
	case strings.HasPrefix(mt, "multipart/"), kind == favaproxy.KindImport,
		strings.HasSuffix(cleanPath, "/api/add_document"):
		return l.UploadBody
	case kind == favaproxy.KindSource:
		return l.SourceBody
	case kind == favaproxy.KindWrite && mt != "" && mt != "application/json" && !strings.HasSuffix(mt, "+json"):
		return l.UploadBody
	default:
		return l.JSONBody
	}
}

// serveWrite handles a write: the body is read whole first (bounded, so a
// slow or huge upload never holds a lock), then the write waits its turn
// and is carried out by its kind's handler, and Fava's answer is sent.
func (s *Server) serveWrite(w http.ResponseWriter, r *http.Request, info *reqInfo, slug string, kind favaproxy.Kind) {
	start := time.Now()
	l := s.bySlug[slug]
	if l == nil {
		s.fail(w, r, info, kind, favaproxy.Errorf(favaproxy.ENotFound, "no ledger at %s", info.cleanPath))
		return
	}
	if err := s.forbidWrite(info.user); err != nil {
		s.refuse(w, r, info, slug, kind, err)
		return
	}
	limit := s.bodyLimit(kind, r, info.cleanPath)
	if r.ContentLength > limit {
		err := favaproxy.Errorf(favaproxy.ETooLarge, "body over %d bytes", limit)
		s.refuse(w, r, info, slug, kind, err)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			err = favaproxy.Errorf(favaproxy.ETooLarge, "body over %d bytes", limit)
		} else {
			err = fmt.Errorf("read body: %w", favaproxy.Errorf(favaproxy.EInvalid, "could not read the request body"))
		}
		s.refuse(w, r, info, slug, kind, err)
		return
	}
	if err := s.checkWrite(r, info, l, kind, body); err != nil {
		s.refuse(w, r, info, slug, kind, err)
		return
	}

	wr := s.newWriteRequest(r, info, l, kind, body)
	done, err := s.prepareWrite(wr)
	if err != nil {
		s.refuse(w, r, info, slug, kind, err)
		return
	}
	defer done()
	resp, err := s.runWrite(r.Context(), wr)
	s.logWrite(r, wr, resp, err, time.Since(start))
	s.auditWrite(r, wr, resp, err)
	if err != nil {
		s.fail(w, r, info, kind, err)
		return
	}
	h := w.Header()
	for k, vs := range resp.header {
		h[k] = vs
	}
	h.Set("Content-Length", strconv.Itoa(len(resp.body)))
	w.WriteHeader(resp.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(resp.body)
	}
}

// newWriteRequest builds the writeRequest of a client's request.
func (s *Server) newWriteRequest(r *http.Request, info *reqInfo, l *ledger, kind favaproxy.Kind, body []byte) *writeRequest {
	u := &url.URL{Scheme: s.upstream.Scheme, Host: s.upstream.Host, RawQuery: r.URL.RawQuery}
	u.Path, u.RawPath = s.outPath(r.URL)

	h := r.Header.Clone()
	removeHopHeaders(h)
	key := h.Get(s.cfg.Idempotency.Header)
	// Never forward an idempotency key: net/http's Transport may resend a
	// request that carries one (Request.isReplayable).
	for _, name := range []string{s.cfg.Idempotency.Header, "Idempotency-Key", "X-Idempotency-Key"} {
		h.Del(name)
	}
	h.Del("Content-Length")
	h.Del("Expect")
	setForwarded(h, r, info.trusted)
	s.id.setIdentity(h, info.user)
	h.Set("X-Request-ID", info.requestID)

	return &writeRequest{
		ledger:         l,
		kind:           kind,
		user:           info.user,
		method:         strings.ToUpper(r.Method),
		url:            u,
		host:           r.Host,
		header:         h,
		body:           body,
		idempotencyKey: key,
		requestID:      info.requestID,
	}
}

// runWrite waits for the write's turn and runs its kind's handler. Lock
// order: the user's lock, then the ledger's lock (taken by the handler),
// never the reverse; both waits together are bounded by lock_timeout.
func (s *Server) runWrite(ctx context.Context, wr *writeRequest) (*writeResponse, error) {
	s.inflight.Add(1)
	defer s.inflight.Done()
	l := wr.ledger
	if n := l.waiting.Add(1); n > int64(s.cfg.Limits.QueueDepth) {
		l.waiting.Add(-1)
		return nil, rejectAs(metricRejectQueueFull, withRetryAfter(favaproxy.Errorf(favaproxy.EUnavailable,
			"too many writes waiting for this ledger; retry later"), retryAfterQueueFull))
	}
	s.metrics.addQueueDepth(l.slug, 1)
	wr.dequeue = sync.OnceFunc(func() { l.waiting.Add(-1); s.metrics.addQueueDepth(l.slug, -1) })
	defer wr.dequeue()
	wr.waitStart = time.Now()

	lctx, cancel := context.WithTimeout(ctx, s.cfg.LockTimeout)
	defer cancel()
	// 1. The user's lock.
	releaseUser, err := l.users.lock(lctx, wr.user)
	if err != nil {
		wr.lockWait = time.Since(wr.waitStart)
		return nil, lockErr(lctx, "user lock", err)
	}
	defer releaseUser()
	// 2. The ledger's lock, inside the handler.
	h := s.handlers[wr.kind]
	if h == nil {
		h = s.handlers[favaproxy.KindWrite]
	}
	return h(lctx, wr)
}

// lockLedger takes the ledger's exclusive lock for wr, waiting while ctx
// lasts. The caller must hold wr.user's lock (lock order: user, then
// ledger).
func (s *Server) lockLedger(ctx context.Context, wr *writeRequest) (release func(), err error) {
	t0 := time.Now()
	release, err = wr.ledger.lock.Lock(ctx)
	wr.lockWait = time.Since(wr.waitStart)
	s.metrics.observeLockWait(wr.ledger.slug, metricModeExclusive, time.Since(t0))
	if err != nil {
		return nil, lockErr(ctx, "ledger lock", err)
	}
	if wr.dequeue != nil {
		wr.dequeue()
	}
	return s.timeHold(wr.ledger.slug, metricModeExclusive, s.auditLocked(wr, release)), nil
}

// underLedgerLock returns a handler that runs fn holding the ledger lock.
// Once the lock is taken the write is carried through even if the client
// leaves: fn runs under a context that is not canceled with the request,
// bounded by timeouts.upstream.
func (s *Server) underLedgerLock(fn writeHandler) writeHandler {
	return func(ctx context.Context, wr *writeRequest) (*writeResponse, error) {
		release, err := s.lockLedger(ctx, wr)
		if err != nil {
			return nil, err
		}
		defer release()
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.Timeouts.Upstream)
		defer cancel()
		return fn(fctx, wr)
	}
}

// forward sends wr to Fava as it is and returns Fava's answer, minus
// hop-by-hop headers. It uses the transport directly (no redirects followed,
// no cookies) and no keep-alive connection, so the request is never resent.
func (s *Server) forward(ctx context.Context, wr *writeRequest) (*writeResponse, error) {
	req, err := http.NewRequestWithContext(ctx, wr.method, wr.url.String(), bytes.NewReader(wr.body))
	if err != nil {
		return nil, fmt.Errorf("forward write: %w", err)
	}
	if len(wr.body) == 0 {
		req.Body, req.GetBody, req.ContentLength = http.NoBody, nil, 0
	}
	req.URL = wr.url
	req.Host = wr.host
	req.Header = wr.header.Clone()

	t0 := time.Now()
	resp, err := s.writeTransport.RoundTrip(req)
	s.metrics.observeUpstream(wr.kind, time.Since(t0))
	if wr.batchSize == 0 {
		wr.batchSize = 1
	}
	if err != nil {
		wr.upstreamTime += time.Since(t0)
		err = upstreamError(err)
		s.countUpstreamError(err, 0)
		return nil, err
	}
	s.countUpstreamError(nil, resp.StatusCode)
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxWriteAnswer+1))
	wr.upstreamTime += time.Since(t0)
	switch {
	case err != nil:
		s.metrics.upstreamError(metricUpstreamBadReply)
		return nil, upstreamError(err)
	case len(body) > maxWriteAnswer:
		s.metrics.upstreamError(metricUpstreamBadReply)
		return nil, fmt.Errorf("forward write: %w", favaproxy.Errorf(favaproxy.EUpstream, "fava's answer is too large"))
	}
	removeHopHeaders(resp.Header)
	return &writeResponse{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// logWrite logs the one line of a write.
func (s *Server) logWrite(r *http.Request, wr *writeRequest, resp *writeResponse, err error, d time.Duration) {
	status, level := 0, slog.LevelInfo
	switch {
	case resp != nil:
		status = resp.status
	case err != nil:
		status, level = httpStatus(err), slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("user", string(wr.user)),
		slog.String("ledger", wr.ledger.slug),
		slog.String("kind", string(wr.kind)),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("idempotency_key", wr.idempotencyKey),
		slog.Int("batch", wr.batchSize),
		slog.Int("status", status),
		slog.String("outcome", writeOutcome(resp, err)),
		slog.Duration("lock_wait", wr.lockWait),
		slog.Duration("upstream", wr.upstreamTime),
		slog.Duration("duration", d),
		slog.String("request_id", wr.requestID),
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	s.log.LogAttrs(r.Context(), level, "write", attrs...)
}

// refuse logs a request refused before it waited for a lock, and answers
// it (see fail).
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, info *reqInfo, slug string, kind favaproxy.Kind, err error) {
	level := slog.LevelWarn
	if favaproxy.ErrorCode(err) == favaproxy.ECanceled {
		level = slog.LevelInfo
	}
	s.log.LogAttrs(r.Context(), level, "refused",
		slog.String("user", string(info.user)), slog.String("ledger", slug), slog.String("kind", string(kind)),
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", httpStatus(err)), slog.String("request_id", info.requestID), slog.String("err", err.Error()))
	s.fail(w, r, info, kind, err)
}
