package fava

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

// Outcome is what a Fava reply means for favaproxy.
type Outcome int

// The outcomes. The zero value is UpstreamError: a reply not understood is
// never taken for a success.
const (
	// UpstreamError is an HTML error page, a non-JSON or malformed body, or
	// a JSON body with neither data nor error: Fava crashed or something
	// other than Fava answered.
	UpstreamError Outcome = iota
	// Success is a JSON API success.
	Success
	// Conflict is Fava's stale-checksum error, "The file at '<path>'
	// changed externally." (HTTP 200 with success false up to 1.29,
	// HTTP 500 from 1.30).
	Conflict
	// UnknownHash is "No entry found for hash ...": the entry moved or is
	// gone.
	UnknownHash
	// ClientError is any other error Fava's JSON API reports.
	ClientError
)

func (o Outcome) String() string {
	switch o {
	case Success:
		return "success"
	case Conflict:
		return "conflict"
	case UnknownHash:
		return "unknown_hash"
	case ClientError:
		return "client_error"
	default:
		return "upstream_error"
	}
}

// Reply is a classified Fava reply.
type Reply struct {
	Outcome Outcome
	// Style is the style the reply was written in, or StyleUnknown when
	// the body does not tell (Style130 and Style1308 replies look the
	// same; Classify reports them as Style130).
	Style  Style
	Status int
	// Message is Fava's error message, or for an UpstreamError a short
	// description of what was wrong with the reply.
	Message string
	// Data is the raw "data" of a success.
	Data json.RawMessage
	// Mtime is the "mtime" of a success: the ledger's mtime from before
	// the request, in nanoseconds as a decimal string.
	Mtime string
	// ConflictPath is the file named in a Conflict's message.
	ConflictPath string
}

// Messages and message parts Fava uses, identical in 1.27 and 1.30.
const (
	conflictPrefix    = "The file at '"
	conflictSuffix    = "' changed externally."
	unknownHashPrefix = "No entry found for hash"
)

// ConflictMessage returns Fava's message for a stale checksum on path.
func ConflictMessage(path string) string {
	return conflictPrefix + path + conflictSuffix
}

// StoredMessage returns add_entries' success data for n entries, worded as
// Fava words it in every version from 1.27 to 1.30.16 (always "entries",
// even for one).
func StoredMessage(n int) string {
	return "Stored " + strconv.Itoa(n) + " entries."
}

// DetectStyle tells the style of a Fava JSON API reply from its body:
// Style127 if it has a "success" key, Style130 if it has "data" or "error"
// without "success", StyleUnknown otherwise (HTML, garbage, other JSON).
func DetectStyle(body []byte) Style {
	obj, ok := parseObject(body)
	if !ok {
		return StyleUnknown
	}
	return detect(obj)
}

func detect(obj map[string]json.RawMessage) Style {
	if _, ok := obj["success"]; ok {
		return Style127
	}
	_, hasData := obj["data"]
	_, hasErr := obj["error"]
	if hasData || hasErr {
		return Style130
	}
	return StyleUnknown
}

// Classify reads a reply of Fava's JSON API in either style. The body
// decides; the status only separates a success from a failure where the body
// alone is ambiguous. header may be nil; its Content-Type is only used to
// describe a reply that is not JSON.
func Classify(status int, header http.Header, body []byte) Reply {
	r := Reply{Status: status}
	obj, ok := parseObject(body)
	if !ok {
		r.Message = describeNonJSON(status, header)
		return r
	}
	r.Style = detect(obj)
	var msg string
	switch r.Style {
	case Style127:
		var success bool
		if err := json.Unmarshal(obj["success"], &success); err != nil {
			r.Message = fmt.Sprintf("HTTP %d, \"success\" is not a boolean", status)
			return r
		}
		if success {
			if status < 200 || status > 299 {
				r.Message = fmt.Sprintf("HTTP %d with \"success\": true", status)
				return r
			}
			return successReply(r, obj)
		}
		if !stringField(obj, "error", &msg) {
			r.Message = fmt.Sprintf("HTTP %d, \"success\": false without an error message", status)
			return r
		}
	case Style130:
		if _, hasErr := obj["error"]; !hasErr {
			if status < 200 || status > 299 {
				r.Message = fmt.Sprintf("HTTP %d with data and no error", status)
				return r
			}
			return successReply(r, obj)
		}
		if !stringField(obj, "error", &msg) {
			r.Message = fmt.Sprintf("HTTP %d, \"error\" is not a string", status)
			return r
		}
	default:
		r.Message = fmt.Sprintf("HTTP %d, JSON reply with neither data nor error", status)
		return r
	}
	r.Message = msg
	switch {
	case strings.HasPrefix(msg, conflictPrefix) && strings.HasSuffix(msg, conflictSuffix) &&
		len(msg) >= len(conflictPrefix)+len(conflictSuffix):
		r.Outcome = Conflict
		r.ConflictPath = msg[len(conflictPrefix) : len(msg)-len(conflictSuffix)]
	case strings.HasPrefix(msg, unknownHashPrefix):
		r.Outcome = UnknownHash
	default:
		r.Outcome = ClientError
	}
	return r
}

func successReply(r Reply, obj map[string]json.RawMessage) Reply {
	r.Outcome = Success
	r.Data = obj["data"]
	if raw, ok := obj["mtime"]; ok {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			r.Mtime = s
		} else if n := bytes.TrimSpace(raw); len(n) > 0 && n[0] >= '0' && n[0] <= '9' {
			r.Mtime = string(n)
		}
	}
	return r
}

func stringField(obj map[string]json.RawMessage, key string, dst *string) bool {
	raw, ok := obj[key]
	return ok && json.Unmarshal(raw, dst) == nil
}

// parseObject decodes body as exactly one JSON object.
func parseObject(body []byte) (map[string]json.RawMessage, bool) {
	b := bytes.TrimSpace(body)
	if len(b) == 0 || b[0] != '{' {
		return nil, false
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil || obj == nil {
		return nil, false
	}
	return obj, true
}

func describeNonJSON(status int, header http.Header) string {
	ct := ""
	if header != nil {
		if mt, _, err := mime.ParseMediaType(header.Get("Content-Type")); err == nil {
			ct = mt
		}
	}
	if ct == "" {
		return fmt.Sprintf("HTTP %d, reply is not a JSON object", status)
	}
	return fmt.Sprintf("HTTP %d, reply is not a JSON object (%s)", status, ct)
}

// ConflictKind says what a conflict's checksum covers.
type ConflictKind string

// Conflict kinds.
const (
	ConflictFile  ConflictKind = "file"  // a whole file (PUT source, add_account)
	ConflictSlice ConflictKind = "slice" // one entry's lines (source_slice)
)

// ConflictInfo is what favaproxy adds to a 409 so that the client can
// reload and retry without another round trip.
type ConflictInfo struct {
	Kind     ConflictKind `json:"kind"`
	FilePath string       `json:"file_path"`
	// CurrentSHA256 is the current checksum of the file or of the slice.
	CurrentSHA256 string `json:"current_sha256sum"`
}

// The reply bodies, with keys in the sorted order Flask's jsonify uses.
type (
	success127 struct {
		Data    any    `json:"data"`
		Mtime   string `json:"mtime"`
		Success bool   `json:"success"`
	}
	success130 struct {
		Data  any    `json:"data"`
		Mtime string `json:"mtime"`
	}
	error127 struct {
		Error   string `json:"error"`
		Success bool   `json:"success"`
	}
	error130 struct {
		Error string `json:"error"`
	}
	conflict127 struct {
		Conflict ConflictInfo `json:"conflict"`
		Error    string       `json:"error"`
		Success  bool         `json:"success"`
	}
	conflict130 struct {
		Conflict ConflictInfo `json:"conflict"`
		Error    string       `json:"error"`
	}
)

// SuccessBody returns a success reply body in style. data must be
// JSON-encodable (a json.RawMessage is embedded as is); SuccessBody panics
// otherwise, as that is a programming error.
func SuccessBody(style Style, data any, mtime string) []byte {
	if style == Style127 {
		return encode(success127{Data: data, Mtime: mtime, Success: true})
	}
	return encode(success130{Data: data, Mtime: mtime})
}

// ErrorReply returns the status and body Fava would answer an API error
// with: 200 and {"error", "success": false} in Style127, status and
// {"error"} otherwise.
func ErrorReply(style Style, status int, msg string) (int, []byte) {
	if style == Style127 {
		return http.StatusOK, encode(error127{Error: msg})
	}
	return status, encode(error130{Error: msg})
}

// ConflictReply returns favaproxy's answer to a conflict it could not
// resolve: always 409, with the keys Fava's error has in style ("error",
// and "success": false in Style127) plus "conflict".
func ConflictReply(style Style, msg string, c ConflictInfo) (int, []byte) {
	if style == Style127 {
		return http.StatusConflict, encode(conflict127{Conflict: c, Error: msg})
	}
	return http.StatusConflict, encode(conflict130{Conflict: c, Error: msg})
}

// encode writes v as compact JSON plus a newline, as jsonify does.
func encode(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("fava: encode reply: %v", err))
	}
	return buf.Bytes()
}

// PreconditionReply returns favaproxy's answer to a write whose
// precondition failed: always 412, with the keys Fava's error has in style
// ("error", and "success": false in Style127) plus "etag", the ledger's
// version now.
func PreconditionReply(style Style, msg, etag string) (int, []byte) {
	if style == Style127 {
		return http.StatusPreconditionFailed, encode(struct {
			ETag    string `json:"etag"`
			Error   string `json:"error"`
			Success bool   `json:"success"`
		}{etag, msg, false})
	}
	return http.StatusPreconditionFailed, encode(struct {
		ETag  string `json:"etag"`
		Error string `json:"error"`
	}{etag, msg})
}

// RefusalReply returns favaproxy's answer to a write it refused with
// status: the keys Fava's error has in style ("error", and "success":
// false in Style127) plus key, holding value.
func RefusalReply(style Style, status int, msg, key string, value any) (int, []byte) {
	body := map[string]any{"error": msg, key: value}
	if style == Style127 {
		body["success"] = false
	}
	return status, encode(body)
}
