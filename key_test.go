package favaproxy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy"
)

func TestParseIdempotencyKey(t *testing.T) {
	long := strings.Repeat("k", favaproxy.MaxKeyLen)
	tests := []struct {
		name, header, prefix string
		want                 string // empty: an error is expected
		errHas               string
	}{
		{"Bare", "abc", "", "abc", ""},
		{"BareWithPrefix", "abc", "idem-", "idem-abc", ""},
		{"Quoted", `"abc"`, "", "abc", ""},
		{"QuotedWithOWS", " \t\"a.b/c_d-1\" ", "", "a.b/c_d-1", ""},
		{"BareWithOWS", "  a1  ", "p/", "p/a1", ""},
		{"MaxLength", long, "prefix-", "prefix-" + long, ""},
		{"Empty", "", "", "", "empty"},
		{"OnlySpaces", "   ", "", "", "empty"},
		{"EmptyQuoted", `""`, "", "", "empty"},
		{"TooLong", long + "k", "", "", "too long"},
		{"TooLongQuoted", `"` + long + `k"`, "", "", "too long"},
		{"Space", "a b", "", "", "position 2"},
		{"Caret", "^abc", "", "", "position 1"},
		{"Newline", "ab\ncd", "", "", "position 3"},
		{"NUL", "ab\x00", "", "", "position 3"},
		{"NonASCII", "abé", "", "", "position 3"},
		{"Comma", "a,b", "", "", "position 2"},
		{"Unterminated", `"abc`, "", "", "unterminated"},
		{"UnterminatedEscape", `"abc\`, "", "", "unterminated"},
		{"EscapedQuote", `"a\"b"`, "", "", "position 2"},
		{"EscapedBackslash", `"a\\b"`, "", "", "position 2"},
		{"BadEscape", `"a\nb"`, "", "", "invalid escape"},
		{"TrailingData", `"abc";p=1`, "", "", "after the closing quote"},
		{"ControlInQuotes", "\"a\tb\"", "", "", "not allowed in a quoted string"},
		{"BadPrefix", "abc", "pre fix", "", "prefix"},
		{"QuoteInsideBare", `ab"c`, "", "", "position 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := favaproxy.ParseIdempotencyKey(tt.header, tt.prefix)
			if tt.errHas == "" {
				if err != nil {
					t.Fatalf("ParseIdempotencyKey(%q, %q) error: %v", tt.header, tt.prefix, err)
				}
				if got != tt.want {
					t.Fatalf("ParseIdempotencyKey(%q, %q) = %q, want %q", tt.header, tt.prefix, got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseIdempotencyKey(%q, %q) = %q, want an error", tt.header, tt.prefix, got)
			}
			var e *favaproxy.Error
			if !errors.As(err, &e) || e.Code != favaproxy.EInvalid {
				t.Fatalf("error %v is not an EInvalid *Error", err)
			}
			if !strings.Contains(e.Message, tt.errHas) {
				t.Fatalf("message %q does not mention %q", e.Message, tt.errHas)
			}
		})
	}
}

func FuzzParseIdempotencyKey(f *testing.F) {
	for _, s := range []string{"abc", `"abc"`, `"a\"b"`, `"a\\b"`, " x ", "", `"`, `"\`, "a b", "k/1.2_3-4", "é", `"abc";x`} {
		f.Add(s, "")
		f.Add(s, "idem-")
	}
	f.Fuzz(func(t *testing.T, header, prefix string) {
		got, err := favaproxy.ParseIdempotencyKey(header, prefix)
		if err != nil {
			if favaproxy.ErrorCode(err) != favaproxy.EInvalid {
				t.Fatalf("error code %q, want %q", favaproxy.ErrorCode(err), favaproxy.EInvalid)
			}
			return
		}
		if !favaproxy.IsLink(got) {
			t.Fatalf("result %q is not a Beancount link", got)
		}
		if !strings.HasPrefix(got, prefix) {
			t.Fatalf("result %q lacks prefix %q", got, prefix)
		}
		if n := len(got) - len(prefix); n < 1 || n > favaproxy.MaxKeyLen {
			t.Fatalf("key length %d out of range", n)
		}
		// The bare form of an accepted key is accepted as itself.
		key := got[len(prefix):]
		if again, err := favaproxy.ParseIdempotencyKey(key, prefix); err != nil || again != got {
			t.Fatalf("bare %q: got %q, %v; want %q", key, again, err, got)
		}
		if again, err := favaproxy.ParseIdempotencyKey(`"`+key+`"`, prefix); err != nil || again != got {
			t.Fatalf("quoted %q: got %q, %v; want %q", key, again, err, got)
		}
	})
}
