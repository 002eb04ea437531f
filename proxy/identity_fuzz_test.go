package proxy

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/favaproxy/favaproxy"
)

// FuzzIdentity feeds identify arbitrary identity headers (in any spelling,
// repeated or not), Connection headers and Basic user names, from trusted
// and untrusted peers, and checks what may never happen: a user name with
// control characters, invalid UTF-8 or over the length bound; an untrusted
// peer's header becoming the user; a repeated trusted header accepted; and
// after setIdentity, any identity header other than the one favaproxy set.
func FuzzIdentity(f *testing.F) {
	for _, s := range []struct {
		name, value, second, conn, basic string
		trusted                          bool
	}{
		{"X-Remote-User", "alice", "", "", "", true},
		{"X-Remote-User", "alice", "", "", "", false},
		{"x-remote-user", "alice", "", "", "", true},
		{"X_Remote_User", "mallory", "", "", "", true},
		{"X-Remote-User", "alice", "bob", "", "", true},
		{"X-Remote-User", "al\x00ice", "", "", "", true},
		{"X-Remote-User", "al\u2028ice", "", "", "", true},
		{"X-Remote-User", "al\xc2\x85ice", "", "", "", true},
		{"X-Remote-User", "\xff", "", "", "", true},
		{"X-Remote-User", strings.Repeat("a", 257), "", "", "", true},
		{"X-Remote-User", "alice", "", "X-Remote-User", "", true},
		{"X-Remote-User", "alice", "", "keep-alive, x_remote_user", "", false},
		{"Other", "x", "", "", "basic-user", false},
		{"X-Remote-User", "", "", "", "ba\nsic", false},
	} {
		f.Add(s.name, s.value, s.second, s.conn, s.basic, s.trusted)
	}
	trusted := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	id := newIdentifier("X-Remote-User", trusted)
	f.Fuzz(func(t *testing.T, name, value, second, conn, basic string, fromTrusted bool) {
		r, err := http.NewRequest("GET", "http://x/test-ledger/", nil)
		if err != nil {
			t.Skip()
		}
		r.RemoteAddr = "10.0.0.1:1234"
		if fromTrusted {
			r.RemoteAddr = "127.0.0.1:1234"
		}
		if name != "" {
			r.Header[name] = []string{value}
			if second != "" {
				r.Header[name] = append(r.Header[name], second)
			}
		}
		if conn != "" {
			r.Header["Connection"] = []string{conn}
		}
		if basic != "" {
			r.SetBasicAuth(basic, "pw")
		}
		tr := id.trustedPeer(r)
		if tr != fromTrusted {
			t.Fatalf("trustedPeer=%v for %s", tr, r.RemoteAddr)
		}
		u, err := id.identify(r, tr)
		if err != nil {
			if favaproxy.ErrorCode(err) != favaproxy.EInvalid {
				t.Fatalf("error code %q, want %q: %v", favaproxy.ErrorCode(err), favaproxy.EInvalid, err)
			}
			return
		}
		s := string(u)
		if len(s) > maxUserLen || !utf8.ValidString(s) || s == "" {
			t.Fatalf("user %q accepted", s)
		}
		for _, c := range s {
			if unicode.IsControl(c) {
				t.Fatalf("user %q with a control character accepted", s)
			}
		}
		canonical := r.Header["X-Remote-User"]
		switch {
		case tr && len(canonical) > 1:
			t.Fatalf("repeated identity header %q accepted as %q", canonical, s)
		case tr && len(canonical) == 1 && canonical[0] != "":
			if s != canonical[0] {
				t.Fatalf("user %q, want the trusted header's %q", s, canonical[0])
			}
		default:
			if bu, _, ok := r.BasicAuth(); ok && bu != "" {
				if s != bu {
					t.Fatalf("user %q, want the Basic user %q", s, bu)
				}
			} else if u != favaproxy.Anonymous {
				t.Fatalf("user %q from an untrusted or absent header, want anonymous", s)
			}
		}
		h := r.Header.Clone()
		id.setIdentity(h, u)
		got := identityHeaders(h)
		if u == favaproxy.Anonymous {
			if len(got) != 0 {
				t.Fatalf("identity headers %q forwarded for anonymous", got)
			}
		} else if len(got) != 1 || got[0] != "X-Remote-User="+s {
			t.Fatalf("identity headers %q forwarded, want only X-Remote-User=%s", got, s)
		}
	})
}

// TestRequestID pins which X-Request-ID values are kept: one, 1 to 128
// printable ASCII characters.
func TestRequestID(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		keep bool
	}{
		{[]string{"abc-123"}, true},
		{[]string{"with space and :/=+"}, true},
		{[]string{strings.Repeat("a", 128)}, true},
		{[]string{strings.Repeat("a", 129)}, false},
		{[]string{"a\tb"}, false},
		{[]string{"caf\u00e9"}, false},
		{[]string{"a", "b"}, false},
		{nil, false},
	} {
		r, _ := http.NewRequest("GET", "http://x/", nil)
		if tc.in != nil {
			r.Header["X-Request-Id"] = tc.in
		}
		got := requestID(r)
		if kept := len(tc.in) == 1 && got == tc.in[0]; kept != tc.keep {
			t.Errorf("requestID(%q)=%q, kept=%v, want %v", tc.in, got, kept, tc.keep)
		}
		if !validRequestID(got) {
			t.Errorf("requestID(%q)=%q is not valid", tc.in, got)
		}
	}
}

// FuzzSameHeader checks that sameHeader, which runs for every header of
// every request, says exactly what comparing normHeader's folding says.
func FuzzSameHeader(f *testing.F) {
	for _, s := range [][2]string{
		{"X-Remote-User", "X-Remote-User"},
		{"x_remote_user", "X-Remote-User"},
		{"X-Remote-Users", "X-Remote-User"},
		{"X-\u212Aey", "x-key"},
		{"X-Remote-Usér", "X-Remote-Usér"},
		{"", ""},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, name, header string) {
		norm := normHeader(header)
		if got, want := sameHeader(name, norm), normHeader(name) == norm; got != want {
			t.Fatalf("sameHeader(%q, %q) = %v, want %v", name, norm, got, want)
		}
	})
}
