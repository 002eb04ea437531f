package proxy

import (
	"net/http"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/favaproxy/favaproxy"
)

// maxUserLen bounds a user name taken from a header or Basic credentials.
const maxUserLen = 256

// identifier decides who a request is from. Only the TCP peer address
// decides whether the identity header (and X-Forwarded-*) is believed:
// a header can be forged by anyone, the peer address cannot.
type identifier struct {
	// header is the identity header's canonical name, e.g. X-Remote-User.
	header string
	// norm is header lower-cased with "_" for "-", for matching variants.
	norm    string
	trusted []netip.Prefix
}

func newIdentifier(header string, trusted []netip.Prefix) *identifier {
	return &identifier{
		header:  http.CanonicalHeaderKey(header),
		norm:    normHeader(header),
		trusted: trusted,
	}
}

// normHeader folds a header name so that every variant a server might treat
// as the same (case, "_" for "-") compares equal.
func normHeader(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

// sameHeader reports whether normHeader(name) == norm, without building
// the folded name: it runs for every header of every request.
func sameHeader(name, norm string) bool {
	for i := 0; i < len(name); i++ {
		if name[i] >= utf8.RuneSelf {
			// Unicode case folding can change the length (K, the Kelvin
			// sign, lowers to k): fold the slow way.
			return normHeader(name) == norm
		}
	}
	if len(name) != len(norm) {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		case c == '_':
			c = '-'
		}
		if c != norm[i] {
			return false
		}
	}
	return true
}

// trustedPeer reports whether the request's TCP peer is a trusted proxy.
func (id *identifier) trustedPeer(r *http.Request) bool {
	if len(id.trusted) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	a := ap.Addr().Unmap()
	for _, p := range id.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// identify returns the request's user: the identity header's value when the
// peer is trusted, else the HTTP Basic user name, else favaproxy.Anonymous.
// It refuses (EInvalid) a trusted request whose identity header is repeated,
// has control characters or is too long, and any request whose Connection
// header names the identity header (which would make a hop drop it).
func (id *identifier) identify(r *http.Request, trusted bool) (favaproxy.User, error) {
	if err := id.checkConnection(r); err != nil {
		return "", err
	}
	if trusted {
		switch vs := r.Header[id.header]; {
		case len(vs) > 1:
			return "", favaproxy.Errorf(favaproxy.EInvalid, "%s header repeated", id.header)
		case len(vs) == 1 && vs[0] != "":
			if err := checkUser(vs[0]); err != nil {
				return "", favaproxy.Errorf(favaproxy.EInvalid, "%s header %s", id.header, err.Message)
			}
			return favaproxy.User(vs[0]), nil
		}
	}
	if name, _, ok := r.BasicAuth(); ok && name != "" {
		if err := checkUser(name); err != nil {
			return "", favaproxy.Errorf(favaproxy.EInvalid, "basic user name %s", err.Message)
		}
		return favaproxy.User(name), nil
	}
	return favaproxy.Anonymous, nil
}

// checkConnection refuses a request whose Connection header names the
// identity header (in any spelling): a hop that honours it would drop the
// header its successor relies on.
func (id *identifier) checkConnection(r *http.Request) error {
	for _, v := range r.Header["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if sameHeader(strings.TrimSpace(tok), id.norm) {
				return favaproxy.Errorf(favaproxy.EInvalid, "Connection header names %s", id.header)
			}
		}
	}
	return nil
}

// checkUser refuses user names that could forge log lines or headers.
func checkUser(s string) *favaproxy.Error {
	if len(s) > maxUserLen {
		return favaproxy.Errorf(favaproxy.EInvalid, "longer than %d bytes", maxUserLen)
	}
	if !utf8.ValidString(s) {
		return favaproxy.Errorf(favaproxy.EInvalid, "is not UTF-8")
	}
	for _, c := range s {
		// C0, DEL and C1 controls, and the Unicode line and paragraph
		// separators some log viewers break lines on.
		if unicode.IsControl(c) || c == '\u2028' || c == '\u2029' {
			return favaproxy.Errorf(favaproxy.EInvalid, "has control characters")
		}
	}
	return nil
}

// setIdentity removes every variant of the identity header from h and, for a
// user other than anonymous, sets it to u: Fava sees only what favaproxy
// decided.
func (id *identifier) setIdentity(h http.Header, u favaproxy.User) {
	for k := range h {
		if sameHeader(k, id.norm) {
			delete(h, k)
		}
	}
	if u != favaproxy.Anonymous && u != "" {
		h[id.header] = []string{string(u)}
	}
}
