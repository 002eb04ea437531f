// Package fava is the one place in favaproxy that knows Fava's wire formats:
// the two styles of JSON replies (up to 1.29 and from 1.30), how to classify
// a reply, how to answer in a given style, and the JSON schema of the entries
// that add_entries accepts, with the validation that keeps a request from
// writing anything but the entries it names.
//
// Fava calls its JSON API internal and changes it between releases; every
// version difference favaproxy handles is written down in this package.
package fava

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Style is a version of Fava's JSON API wire format.
type Style int

// The styles. The zero value, StyleUnknown, is a style not (yet) detected;
// encoders treat it like the newest style.
const (
	StyleUnknown Style = iota
	// Style127 is Fava up to 1.29: every reply is HTTP 200 with a
	// "success" key; errors are {"success": false, "error": msg};
	// documents are moved with a GET.
	Style127
	// Style130 is Fava 1.30.0 to 1.30.7: success is {"data", "mtime"},
	// errors are {"error": msg} with an HTTP error status; move is a GET.
	Style130
	// Style1308 is Fava from 1.30.8: as Style130, but move is a PUT
	// (put_move from tag v1.30.8).
	Style1308
)

// String returns the first Fava version of the style ("1.27", "1.30",
// "1.30.8") or "unknown"; ParseStyle accepts it back.
func (s Style) String() string {
	switch s {
	case Style127:
		return "1.27"
	case Style130:
		return "1.30"
	case Style1308:
		return "1.30.8"
	default:
		return "unknown"
	}
}

// ParseStyle returns the style of a Fava version such as "1.27", "1.29.1",
// "1.30" or "1.30.16" (a leading "v" is allowed). "", "auto" and "unknown"
// give StyleUnknown: detect the style from replies.
func ParseStyle(version string) (Style, error) {
	v := strings.TrimPrefix(strings.TrimSpace(version), "v")
	switch v {
	case "", "auto", "unknown":
		return StyleUnknown, nil
	}
	parts := strings.Split(v, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return StyleUnknown, fmt.Errorf("parse fava version %q: want MAJOR.MINOR[.PATCH]", version)
	}
	nums := make([]int, 3)
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || p == "" || (len(p) > 1 && p[0] == '0') {
			return StyleUnknown, fmt.Errorf("parse fava version %q: %q is not a version number", version, p)
		}
		nums[i] = n
	}
	major, minor, patch := nums[0], nums[1], nums[2]
	switch {
	case major < 1 || (major == 1 && minor < 30):
		return Style127, nil
	case major == 1 && minor == 30 && patch < 8:
		return Style130, nil
	default:
		return Style1308, nil
	}
}

// MoveMethod is the HTTP method of Fava's document move endpoint:
// GET up to 1.30.7, PUT from 1.30.8. For StyleUnknown it is PUT.
func (s Style) MoveMethod() string {
	if s == Style127 || s == Style130 {
		return http.MethodGet
	}
	return http.MethodPut
}
