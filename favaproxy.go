// Package favaproxy holds the domain types that favaproxy's packages share:
// who is writing, what kind of write it is, and the error codes every layer
// speaks. It imports nothing of the project, so every package may use it.
package favaproxy

import (
	"errors"
	"fmt"
)

// User names whoever a request is attributed to.
type User string

// Anonymous is the user of a request that carries no identity.
const Anonymous User = "anonymous"

// Kind says what a request does to a ledger.
type Kind string

// The kinds of requests. Reads and Static take no write lock; every other
// kind is a write and is serialized per ledger.
const (
	KindRead       Kind = "read"        // ledger pages and API GETs
	KindStatic     Kind = "static"      // /static/, / and other ledger-less paths
	KindAddEntries Kind = "add_entries" // PUT api/add_entries
	KindAddAccount Kind = "add_account" // PUT api/add_account (favaproxy's own)
	KindSource     Kind = "source"      // PUT api/source
	KindSlice      Kind = "source_slice"
	KindDocument   Kind = "document" // attach_document, add_document, move, DELETE document
	KindImport     Kind = "import"   // upload_import_file
	KindWrite      Kind = "write"    // any other mutating request (extensions, unknown API)
)

// IsWrite reports whether requests of kind k change the ledger.
func (k Kind) IsWrite() bool {
	return k != KindRead && k != KindStatic && k != ""
}

// Error codes. The proxy maps each to one HTTP status.
const (
	EInvalid      = "invalid"      // 400: malformed request
	EUnauthorized = "unauthorized" // 401: no or bad credentials
	EForbidden    = "forbidden"    // 403: the user may not write
	ENotFound     = "not_found"    // 404: no such ledger or route
	EConflict     = "conflict"     // 409: a conflict favaproxy could not resolve
	ETooLarge     = "too_large"    // 413: body over the route's limit
	EMismatch     = "mismatch"     // 422: idempotency key reused for another request
	ETooMany      = "too_many"     // 429: too many failed attempts to authenticate
	EUnavailable  = "unavailable"  // 503: lock wait timed out, queue full, shutting down
	EUpstream     = "upstream"     // 502: Fava could not be reached or answered garbage
	ETimeout      = "timeout"      // 504: Fava did not answer in time
	EInternal     = "internal"     // 500: a bug or an I/O failure in favaproxy
	// EInsufficientStorage is 507: favaproxy could not save what a safe
	// write needs (a full disk); nothing was written.
	EInsufficientStorage = "insufficient_storage"
	ECanceled            = "client_closed" // 499: the client went away (logs only)
)

// Error is an error with a code the proxy maps to an HTTP status, and a
// message short and safe enough to show the client.
type Error struct {
	Code    string
	Message string
	// Field names the offending part of the request body, if any,
	// for example "entries[3].postings[1].account".
	Field string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("favaproxy error: code=%s field=%s message=%s", e.Code, e.Field, e.Message)
	}
	return fmt.Sprintf("favaproxy error: code=%s message=%s", e.Code, e.Message)
}

// Errorf returns an *Error with the code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// FieldErrorf returns an EInvalid *Error naming the field at fault.
func FieldErrorf(field, format string, args ...any) *Error {
	return &Error{Code: EInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain,
// EInternal for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	default:
		return EInternal
	}
}

// ErrorMessage returns the client-safe message of err: the message of the
// first *Error in its chain, or "internal error" for any other error.
func ErrorMessage(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		if e.Field != "" {
			return e.Field + ": " + e.Message
		}
		return e.Message
	default:
		return "internal error"
	}
}

// retryAfterError is an error whose answer tells the client when to retry.
type retryAfterError struct {
	err     error
	seconds int
}

func (e *retryAfterError) Error() string { return e.err.Error() }
func (e *retryAfterError) Unwrap() error { return e.err }

// WithRetryAfter wraps err so that its answer carries Retry-After: seconds.
func WithRetryAfter(err error, seconds int) error {
	return &retryAfterError{err: err, seconds: seconds}
}

// RetryAfter returns the seconds of the first WithRetryAfter in err's chain.
func RetryAfter(err error) (seconds int, ok bool) {
	var ra *retryAfterError
	if errors.As(err, &ra) {
		return ra.seconds, true
	}
	return 0, false
}

// Reasons of refusals whose error code alone does not tell them apart
// (both are EUnavailable).
const (
	ReasonQueueFull   = "queue_full"   // too many writes wait for the ledger
	ReasonLockTimeout = "lock_timeout" // the ledger lock stayed busy for lock_timeout
	ReasonBuffersFull = "buffers_full" // limits.buffer_bytes of bodies were being received
)

// rejectError marks an error as a refusal for a reason.
type rejectError struct {
	err    error
	reason string
}

func (e *rejectError) Error() string { return e.err.Error() }
func (e *rejectError) Unwrap() error { return e.err }

// Rejected wraps err so that it is counted as a refusal for reason.
func Rejected(reason string, err error) error {
	return &rejectError{err: err, reason: reason}
}

// RejectReason returns the reason of the first Rejected in err's chain, or "".
func RejectReason(err error) string {
	var re *rejectError
	if errors.As(err, &re) {
		return re.reason
	}
	return ""
}

// statusOf maps error codes to HTTP statuses. It is the only place that
// does.
var statusOf = map[string]int{
	EInvalid:             400,
	EUnauthorized:        401,
	EForbidden:           403,
	ENotFound:            404,
	EConflict:            409,
	ETooLarge:            413,
	EMismatch:            422,
	ETooMany:             429,
	EUnavailable:         503,
	EUpstream:            502,
	ETimeout:             504,
	EInternal:            500,
	EInsufficientStorage: 507,
	ECanceled:            499, // never sent: the client is gone; logs only
}

// HTTPStatus returns the HTTP status that answers err: the status of its
// code, 500 for an error without one.
func HTTPStatus(err error) int {
	if s, ok := statusOf[ErrorCode(err)]; ok {
		return s
	}
	return 500
}
