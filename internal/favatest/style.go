package favatest

import (
	"fmt"
	"net/http"
	"path/filepath"
)

// The wire styles the emulator speaks. Every difference between them lives
// in this file.
const (
	// Style127 answers like Fava 1.27 to 1.29: every API error is HTTP 200
	// with {"success": false, "error": …}, success carries "success": true,
	// documents move with GET.
	Style127 = "1.27"
	// Style130 answers like Fava 1.30.0 to 1.30.7: API errors carry HTTP
	// statuses (500 for plain Fava errors, including an unknown entry hash),
	// documents still move with GET, context still returns the slice.
	Style130 = "1.30"
	// Style1308 answers like Fava 1.30.8 to 1.30.14 (tag v1.30.8 has
	// put_move and get_source_slice): an unknown entry hash is 404,
	// documents move with PUT, a body that is not JSON is 400, context no
	// longer returns the slice (GET source_slice does).
	Style1308 = "1.30.8"
	// Style13015 answers like Fava from 1.30.15: as Style1308, and move
	// refuses a file that is not a document or import file (400), deleting
	// a document that does not exist is 404, a PUT body that is not a JSON
	// object is 400.
	Style13015 = "1.30.15"
)

// style holds every behaviour that differs between Fava releases.
type style struct {
	name string
	// successKey adds "success": true/false to API answers (≤ 1.29).
	successKey bool
	// statuses answers API errors with their HTTP status; without it every
	// API error is 200.
	statuses bool
	// hashNotFoundStatus is the status of "No entry found for hash".
	hashNotFoundStatus int
	// moveMethod is the method of the document move endpoint.
	moveMethod string
	// contextSlice makes GET context return slice and sha256sum.
	contextSlice bool
	// sourceSliceGET serves GET source_slice.
	sourceSliceGET bool
	// invalidJSON is the error for a PUT body that is not JSON.
	invalidJSON *apiError
	// typeSuffix formats the tail of "Parameter `x` of incorrect type".
	typeSuffix func(list bool) string
	// notDocument is the error for a file that is not a document.
	notDocument func(filename string) *apiError
	// moveChecksDocument refuses to move a file that is not a document
	// or import file (≥ 1.30.15); earlier versions move any file.
	moveChecksDocument bool
	// missingDocumentStatus is the status of deleting a document that does
	// not exist: a plain Fava error (500) before 1.30.15, 404 from it.
	missingDocumentStatus int
	// defaultFile is where add_entries appends an entry no insert-entry
	// option places: see (*style).defaultFile.
	defaultFileRule defaultFileRule
	// reloadOnUnknownSlug checks every ledger for changes before answering
	// 404 for an unknown slug (≤ 1.29); 1.30 looks the slug up in the
	// titles of the last load only.
	reloadOnUnknownSlug bool
}

func lookupStyle(name string) (*style, error) {
	switch name {
	case Style127:
		return &style{
			name:                Style127,
			successKey:          true,
			reloadOnUnknownSlug: true,
			hashNotFoundStatus:  http.StatusInternalServerError,
			moveMethod:          http.MethodGet,
			contextSlice:        true,
			invalidJSON:         plainError("Invalid JSON request."),
			typeSuffix:          func(bool) string { return "." },
			notDocument: func(string) *apiError {
				return plainError("No valid document or import file.")
			},
		}, nil
	case Style130, "":
		return &style{
			name:               Style130,
			statuses:           true,
			hashNotFoundStatus: http.StatusInternalServerError,
			moveMethod:         http.MethodGet,
			contextSlice:       true,
			invalidJSON:        plainError("Invalid JSON request."),
			typeSuffix:         pythonTypeSuffix,
			notDocument:        notDocumentError,
			defaultFileRule:    defaultFileFromCwd,
		}, nil
	case Style1308, "1.30.10": // 1.30.10: this style's name before
		return style1308(), nil
	case Style13015:
		st := style1308()
		st.name = Style13015
		st.moveChecksDocument = true
		st.missingDocumentStatus = http.StatusNotFound
		return st, nil
	}
	return nil, fmt.Errorf("unknown style %q (want %s, %s, %s or %s)", name, Style127, Style130, Style1308, Style13015)
}

// style1308 is the style of Fava 1.30.8 to 1.30.14.
func style1308() *style {
	return &style{
		name:               Style1308,
		statuses:           true,
		hashNotFoundStatus: http.StatusNotFound,
		moveMethod:         http.MethodPut,
		sourceSliceGET:     true,
		invalidJSON:        validationError("Invalid JSON body."),
		typeSuffix:         pythonTypeSuffix,
		notDocument:        notDocumentError,
		defaultFileRule:    defaultFileFromOption,
	}
}

// defaultFileRule is how a Fava version reads fava-option "default-file".
type defaultFileRule int

const (
	// defaultFileIgnored: up to 1.29 entries always go to the main file.
	defaultFileIgnored defaultFileRule = iota
	// defaultFileFromCwd: 1.30.0 to 1.30.7 take the value as a path from
	// Fava's working directory (the option's file when empty).
	defaultFileFromCwd
	// defaultFileFromOption: from 1.30.8 the value is relative to the
	// option's file's directory (the option's file when empty).
	defaultFileFromOption
)

// defaultFile returns the file add_entries appends to: main, or what the
// ledger's last default-file option names.
func (st *style) defaultFile(main string, o *defaultFileOpt) string {
	if o == nil || st.defaultFileRule == defaultFileIgnored {
		return main
	}
	switch {
	case o.value == "":
		return o.file
	case st.defaultFileRule == defaultFileFromCwd:
		if abs, err := filepath.Abs(o.value); err == nil {
			return abs
		}
		return o.value
	default:
		return filepath.Join(filepath.Dir(o.file), o.value)
	}
}

func pythonTypeSuffix(list bool) string {
	if list {
		return " - expected <class 'list'>."
	}
	return " - expected <class 'str'>."
}

func notDocumentError(filename string) *apiError {
	return statusError(http.StatusBadRequest, fmt.Sprintf("Not valid document or import file: '%s'.", filename))
}

// status returns the HTTP status an API error is answered with.
func (st *style) status(e *apiError) int {
	if !st.statuses {
		return http.StatusOK
	}
	if e.hashNotFound {
		return st.hashNotFoundStatus
	}
	return e.status
}

// errorBody returns the JSON body of an API error.
func (st *style) errorBody(e *apiError) map[string]any {
	if st.successKey {
		return map[string]any{"success": false, "error": e.msg}
	}
	return map[string]any{"error": e.msg}
}

// successBody returns the JSON body of a successful API call.
func (st *style) successBody(data any, mtime int64) map[string]any {
	body := map[string]any{"data": data, "mtime": fmt.Sprint(mtime)}
	if st.successKey {
		body["success"] = true
	}
	return body
}

// apiError is an error Fava turns into a JSON error answer. status is the
// status Fava ≥ 1.30 uses.
type apiError struct {
	status       int
	msg          string
	hashNotFound bool
}

func (e *apiError) Error() string { return e.msg }

// plainError is a FavaAPIError: 500 on ≥ 1.30.
func plainError(msg string) *apiError {
	return &apiError{status: http.StatusInternalServerError, msg: msg}
}

// validationError is a missing or mistyped parameter: 400 on ≥ 1.30.
func validationError(msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, msg: "Invalid API request: " + msg}
}

func statusError(status int, msg string) *apiError {
	return &apiError{status: status, msg: msg}
}

func hashNotFoundError(hash string) *apiError {
	return &apiError{status: http.StatusInternalServerError, msg: fmt.Sprintf(`No entry found for hash "%s"`, hash), hashNotFound: true}
}

func changedExternallyError(path string) *apiError {
	return plainError(fmt.Sprintf("The file at '%s' changed externally.", path))
}
