package proxy

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/favaproxy/favaproxy"
)

// instrument wraps the router so that every request, favaproxy's own
// endpoints included, is counted once by kind and status when it is
// answered. A request answered with nothing because its client left is
// counted as 499.
func (s *Server) instrument(next http.Handler) http.Handler {
	if s.metrics == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var kind favaproxy.Kind // "": favaproxy's own endpoints, counted as other
		if !ownRoutes[r.URL.Path] {
			_, kind = s.cls.classify(r.Method, r.URL.Path)
		}
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			code := sw.status
			if code == 0 {
				code = http.StatusOK
				if r.Context().Err() != nil {
					code = 499
				}
			}
			s.metrics.request(kind, code, time.Since(start))
		}()
		next.ServeHTTP(sw, r)
	})
}

// statusWriter records the status of an answer. It unwraps to the
// connection's writer, so flushing and deadlines (http.ResponseController)
// still work through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// rejectError marks an error as a refusal counted under reason in
// favaproxy_rejected_requests_total, when its code alone does not say
// which (a 503 is a full queue or a lock timeout).
type rejectError struct {
	err    error
	reason string
}

func (e *rejectError) Error() string { return e.err.Error() }
func (e *rejectError) Unwrap() error { return e.err }

// rejectAs wraps err so that it is counted as a rejection for reason.
func rejectAs(reason string, err error) error {
	return &rejectError{err: err, reason: reason}
}

// rejectReasons maps the codes of refusals that say their reason by
// themselves.
var rejectReasons = map[string]string{
	favaproxy.EInvalid:      metricRejectInvalid,
	favaproxy.ETooLarge:     metricRejectTooLarge,
	favaproxy.EUnauthorized: metricRejectUnauthorized,
	favaproxy.EForbidden:    metricRejectForbidden,
}

// countReject counts err, the reason of a refused request, if it is a
// rejection (not, say, a failure of Fava).
func (s *Server) countReject(err error) {
	var re *rejectError
	if errors.As(err, &re) {
		s.metrics.reject(re.reason)
		return
	}
	if reason, ok := rejectReasons[favaproxy.ErrorCode(err)]; ok {
		s.metrics.reject(reason)
	}
}

// countUpstreamError counts a failed call to Fava: err from upstreamError
// (dial or timeout), or a status of 500 and above.
func (s *Server) countUpstreamError(err error, status int) {
	switch {
	case err != nil && favaproxy.ErrorCode(err) == favaproxy.ETimeout:
		s.metrics.upstreamError(metricUpstreamTimeout)
	case err != nil:
		s.metrics.upstreamError(metricUpstreamDial)
	case status >= 500:
		s.metrics.upstreamError(metricUpstreamStatus5xx)
	}
}

// timeHold returns release wrapped so that it runs once and observes how
// long the lock was held; later calls do nothing.
func (s *Server) timeHold(ledger, mode string, release func()) func() {
	if s.metrics == nil {
		return release
	}
	start := time.Now()
	return sync.OnceFunc(func() {
		release()
		s.metrics.observeLockHold(ledger, mode, time.Since(start))
	})
}

// writeOutcome is the outcome field of a write's log line: "ok" when Fava
// accepted it, "fava_error" when Fava answered an error, else the code of
// favaproxy's refusal or failure ("invalid", "unavailable", "client_closed"…).
func writeOutcome(resp *writeResponse, err error) string {
	switch {
	case err != nil:
		return favaproxy.ErrorCode(err)
	case resp == nil:
		return favaproxy.EInternal
	case resp.status < 400:
		return "ok"
	default:
		return "fava_error"
	}
}
