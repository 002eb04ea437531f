package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"net/http"
	"strings"

	"github.com/favaproxy/favaproxy"
)

// httpStatus returns the HTTP status for err.
func httpStatus(err error) int { return favaproxy.HTTPStatus(err) }

// writeJSONError answers err as {"error": msg} (plus "field" when the error
// names one) with the status of its code.
func writeJSONError(w http.ResponseWriter, err error) {
	if seconds, ok := favaproxy.RetryAfter(err); ok {
		w.Header().Set("Retry-After", fmt.Sprint(seconds))
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
