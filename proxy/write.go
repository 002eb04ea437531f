package proxy

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/ledger"
)

// bodyLimit returns the most bytes a write's body may have under l.
func bodyLimit(l config.Limits, kind favaproxy.Kind, r *http.Request, cleanPath string) int64 {
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
// slow or huge upload never holds a lock), then the ledger carries it out
// (ledger.Write) and its answer is sent.
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
	limit := bodyLimit(s.cfg.Limits, kind, r, info.cleanPath)
	if r.ContentLength > limit {
		err := favaproxy.Errorf(favaproxy.ETooLarge, "body over %d bytes", limit)
		s.refuse(w, r, info, slug, kind, err)
		return
	}
	// Bodies are held whole until answered; bound them all together.
	reserve := limit
	if r.ContentLength >= 0 {
		reserve = r.ContentLength
	}
	if !s.buffers.TryAcquire(reserve) {
		err := favaproxy.Rejected(favaproxy.ReasonBuffersFull, favaproxy.WithRetryAfter(favaproxy.Errorf(favaproxy.EUnavailable,
			"too many write bodies are being received; retry later"), 1))
		s.refuse(w, r, info, slug, kind, err)
		return
	}
	defer s.buffers.Release(reserve)
	body, err := readBody(http.MaxBytesReader(w, r.Body, limit), r.ContentLength)
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

	pre, err := ledger.ParsePrecondition(r.Header)
	if err != nil {
		s.refuse(w, r, info, slug, kind, err)
		return
	}
	require, err := ledger.ParseRequirements(r.Header)
	if err != nil {
		s.refuse(w, r, info, slug, kind, err)
		return
	}
	req := s.newWriteRequest(r, info, kind, body)
	req.Precondition, req.Require = pre, require
	s.inflight.Add(1)
	resp, err := l.Write(r.Context(), req)
	s.inflight.Done()
	if !req.Stats.Queued {
		s.refuse(w, r, info, slug, kind, err)
		return
	}
	s.logWrite(r, l, req, resp, err, time.Since(start))
	if err != nil {
		s.fail(w, r, info, kind, err)
		return
	}
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(resp.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(resp.Body)
	}
}

// readBody reads a whole body into a buffer of exactly its announced length
// (io.ReadAll would grow one to up to twice that), or, without one, as it
// comes.
func readBody(r io.Reader, length int64) ([]byte, error) {
	if length < 0 {
		return io.ReadAll(r)
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	// Nothing may follow the announced length (MaxBytesReader enforces the
	// limit; net/http enforces Content-Length).
	return body, nil
}

// newWriteRequest builds the ledger.Request of a client's request.
func (s *Server) newWriteRequest(r *http.Request, info *reqInfo, kind favaproxy.Kind, body []byte) *ledger.Request {
	u := &url.URL{Scheme: s.upstream.Scheme, Host: s.upstream.Host, RawQuery: r.URL.RawQuery}
	u.Path, u.RawPath = s.outPath(r.URL)

	h := r.Header.Clone()
	fava.RemoveHopHeaders(h)
	key := h.Get(s.cfg.Idempotency.Header)
	// Never forward an idempotency key: net/http's Transport may resend a
	// request that carries one (Request.isReplayable).
	for _, name := range []string{s.cfg.Idempotency.Header, "Idempotency-Key", "X-Idempotency-Key"} {
		h.Del(name)
	}
	h.Del("Content-Length")
	h.Del("Expect")
	// Preconditions are favaproxy's to evaluate, against the ledger.
	h.Del("If-Match")
	h.Del("If-None-Match")
	h.Del(ledger.RequireHeader)
	setForwarded(h, r, info.trusted)
	s.id.setIdentity(h, info.user)
	h.Set("X-Request-ID", info.requestID)

	return &ledger.Request{
		Kind:           kind,
		User:           info.user,
		Method:         strings.ToUpper(r.Method),
		URL:            u,
		Host:           r.Host,
		Header:         h,
		Body:           body,
		IdempotencyKey: key,
		RequestID:      info.requestID,
		Route:          r.Method + " " + r.URL.Path,
	}
}

// logWrite logs the one line of a write.
func (s *Server) logWrite(r *http.Request, l *ledger.Ledger, req *ledger.Request, resp *ledger.Response, err error, d time.Duration) {
	status, level := 0, slog.LevelInfo
	switch {
	case resp != nil:
		status = resp.Status
	case err != nil:
		status, level = favaproxy.HTTPStatus(err), slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("user", string(req.User)),
		slog.String("ledger", l.Slug()),
		slog.String("kind", string(req.Kind)),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("idempotency_key", req.IdempotencyKey),
		slog.Int("batch", req.Stats.Batch),
		slog.Int("status", status),
		slog.String("outcome", writeOutcome(resp, err)),
		slog.Duration("lock_wait", req.Stats.LockWait),
		slog.Duration("upstream", req.Stats.Upstream),
		slog.Duration("duration", d),
		slog.String("request_id", req.RequestID),
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
		slog.Int("status", favaproxy.HTTPStatus(err)), slog.String("request_id", info.requestID), slog.String("err", err.Error()))
	s.fail(w, r, info, kind, err)
}
