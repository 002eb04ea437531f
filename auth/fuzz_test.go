package auth

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzBasicHeader feeds arbitrary Authorization values to Basic: it must not
// panic, must answer ErrUnauthorized to everything else, and must pass only
// the exact credentials of the one user in the file.
func FuzzBasicHeader(f *testing.F) {
	const user, password = "alice", "correct horse"
	path := filepath.Join(f.TempDir(), "htpasswd")
	writeFile(f, path, 0, hashLine(f, user, password))
	b := mustBasic(f, path)
	enc := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

	for _, s := range []string{
		"Basic " + enc(user+":"+password),
		"basic " + enc(user+":"+password),
		"Basic  " + enc(user+":"+password),
		"Basic " + enc(user+":"+password+"\x00"),
		"Basic " + enc(user+"\x00:"+password),
		"Basic " + enc(user+":"+password[:len(password)-1]),
		"Basic " + enc("Alice:"+password),
		"Basic " + enc(user+password),
		"Basic " + enc(":"),
		"Basic " + enc(""),
		"Basic " + base64.RawStdEncoding.EncodeToString([]byte(user+":"+password)),
		"Basic =",
		"Basic",
		"Bearer " + enc(user+":"+password),
		"",
		"\xff\xfe",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header["Authorization"] = []string{h}
		got, err := b.Authenticate(r)
		// The oracle: scheme Basic in any case, spaces, then the canonical
		// base64 of exactly user:password.
		scheme, rest, _ := strings.Cut(h, " ")
		raw, decErr := base64.StdEncoding.Strict().DecodeString(strings.TrimLeft(rest, " "))
		exact := strings.EqualFold(scheme, "basic") && decErr == nil && string(raw) == user+":"+password
		switch {
		case exact && (err != nil || got != user):
			t.Fatalf("%q: user=%q err=%v, want %q", h, got, err, user)
		case !exact && err == nil:
			t.Fatalf("%q: accepted as %q", h, got)
		case !exact && !errors.Is(err, ErrUnauthorized):
			t.Fatalf("%q: err=%v, want ErrUnauthorized", h, err)
		case !exact && got != "":
			t.Fatalf("%q: user=%q on failure", h, got)
		}
	})
}
