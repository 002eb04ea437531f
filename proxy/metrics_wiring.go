package proxy

import (
	"net/http"
	"time"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/ledger"
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
			_, kind = s.cls.route(r.Method, r.URL.Path)
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

// rejectReasons maps the codes of refusals that say their reason by
// themselves.
var rejectReasons = map[string]string{
	favaproxy.EInvalid:      metricRejectInvalid,
	favaproxy.ETooLarge:     metricRejectTooLarge,
	favaproxy.EUnauthorized: metricRejectUnauthorized,
	favaproxy.EForbidden:    metricRejectForbidden,
}

// rejectErr counts err, the reason of a refused request, if it is a
// rejection (not, say, a failure of Fava).
func (m *metrics) rejectErr(err error) {
	if reason := favaproxy.RejectReason(err); reason != "" {
		m.reject(reason)
		return
	}
	if reason, ok := rejectReasons[favaproxy.ErrorCode(err)]; ok {
		m.reject(reason)
	}
}

// countUpstreamError counts a failed call to Fava: err from upstreamError
// (dial or timeout), or a status of 500 and above.
func (m *metrics) countUpstreamError(err error, status int) {
	switch {
	case err != nil && favaproxy.ErrorCode(err) == favaproxy.ETimeout:
		m.UpstreamError(metricUpstreamTimeout)
	case err != nil:
		m.UpstreamError(metricUpstreamDial)
	case status >= 500:
		m.UpstreamError(metricUpstreamStatus5xx)
	}
}

// writeOutcome is the outcome field of a write's log line: "ok" when Fava
// accepted it, "fava_error" when Fava answered an error, the condition that
// did not hold for a refused conditional write ("precondition_failed",
// "requirement_failed"), else the code of favaproxy's refusal or failure
// ("invalid", "unavailable", "client_closed"…).
func writeOutcome(resp *ledger.Response, err error) string {
	switch {
	case err != nil:
		return favaproxy.ErrorCode(err)
	case resp == nil:
		return favaproxy.EInternal
	case resp.Status < 400:
		return "ok"
	case resp.Refused != "":
		return resp.Refused
	default:
		return "fava_error"
	}
}
