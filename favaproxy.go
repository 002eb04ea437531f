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
	EInvalid      = "invalid"       // 400: malformed request
	EUnauthorized = "unauthorized"  // 401: no or bad credentials
	EForbidden    = "forbidden"     // 403: the user may not write
	ENotFound     = "not_found"     // 404: no such ledger or route
	EConflict     = "conflict"      // 409: a conflict favaproxy could not resolve
	ETooLarge     = "too_large"     // 413: body over the route's limit
	EMismatch     = "mismatch"      // 422: idempotency key reused for another request
	EUnavailable  = "unavailable"   // 503: lock wait timed out, queue full, shutting down
	EUpstream     = "upstream"      // 502: Fava could not be reached or answered garbage
	ETimeout      = "timeout"       // 504: Fava did not answer in time
	EInternal     = "internal"      // 500: a bug or an I/O failure in favaproxy
	ECanceled     = "client_closed" // 499: the client went away (logs only)
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
