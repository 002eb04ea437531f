package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/favaproxy/favaproxy"
)

// statusOf maps favaproxy error codes to HTTP statuses. It is the only
// place that does.
var statusOf = map[string]int{
	favaproxy.EInvalid:      http.StatusBadRequest,
	favaproxy.EUnauthorized: http.StatusUnauthorized,
	favaproxy.EForbidden:    http.StatusForbidden,
	favaproxy.ENotFound:     http.StatusNotFound,
	favaproxy.EConflict:     http.StatusConflict,
	favaproxy.ETooLarge:     http.StatusRequestEntityTooLarge,
	favaproxy.EMismatch:     http.StatusUnprocessableEntity,
	favaproxy.EUnavailable:  http.StatusServiceUnavailable,
	favaproxy.EUpstream:     http.StatusBadGateway,
	favaproxy.ETimeout:      http.StatusGatewayTimeout,
	favaproxy.EInternal:     http.StatusInternalServerError,
	favaproxy.ECanceled:     499, // never sent: the client is gone; logs only
}

// httpStatus returns the HTTP status for err.
func httpStatus(err error) int {
	if s, ok := statusOf[favaproxy.ErrorCode(err)]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// retryAfterError is an error whose answer carries a Retry-After header.
type retryAfterError struct {
	err     error
	seconds int
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// withRetryAfter wraps err so that its answer says Retry-After: seconds.
func withRetryAfter(err error, seconds int) error {
	return &retryAfterError{err: err, seconds: seconds}
}

// writeJSONError answers err as {"error": msg} (plus "field" when the error
// names one) with the status of its code.
func writeJSONError(w http.ResponseWriter, err error) {
	var ra *retryAfterError
	if errors.As(err, &ra) {
		w.Header().Set("Retry-After", fmt.Sprint(ra.seconds))
	}
	body := map[string]string{"error": favaproxy.ErrorMessage(err)}
	var fe *favaproxy.Error
	if errors.As(err, &fe) && fe.Field != "" {
		body["error"] = fe.Message
		body["field"] = fe.Field
	}
	writeJSON(w, httpStatus(err), body)
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	writeBody(w, status, "application/json", append(b, '\n'))
}

// writeHTMLError answers err as a short HTML page, for browsers.
func writeHTMLError(w http.ResponseWriter, err error) {
	status := httpStatus(err)
	msg := html.EscapeString(favaproxy.ErrorMessage(err))
	title := fmt.Sprintf("%d %s", status, http.StatusText(status))
	b := fmt.Appendf(nil, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head>"+
		"<body><h1>%s</h1><p>favaproxy: %s</p></body></html>\n", title, title, msg)
	writeBody(w, status, "text/html; charset=utf-8", b)
}

// writeBody answers b, of contentType, with status; favaproxy's own answers
// are never cached.
func writeBody(w http.ResponseWriter, status int, contentType string, b []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Content-Length", fmt.Sprint(len(b)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// isAPIPath reports whether a cleaned path is one of Fava's JSON API
// routes, /…/api/…, whose clients expect JSON errors.
func isAPIPath(p string) bool {
	return strings.Contains(p, "/api/") || strings.HasSuffix(p, "/api")
}

// upstreamError turns an error of a call to Fava into EUpstream (502) or,
// for a timeout, ETimeout (504).
func upstreamError(err error) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("call fava: %w: %w", favaproxy.Errorf(favaproxy.ETimeout, "fava did not answer in time"), err)
	}
	return fmt.Errorf("call fava: %w: %w", favaproxy.Errorf(favaproxy.EUpstream, "fava could not be reached"), err)
}

// hopHeaders are removed from requests and responses at every hop (RFC 9110
// 7.6.1), as httputil.ReverseProxy does; headers named by Connection too.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// removeHopHeaders deletes hop-by-hop headers from h.
func removeHopHeaders(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, f := range hopHeaders {
		h.Del(f)
	}
}
