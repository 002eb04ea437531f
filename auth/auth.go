// Package auth is favaproxy's optional authentication for deployments
// without an auth proxy in front: HTTP Basic against an htpasswd file of
// bcrypt hashes, or bearer tokens stored hashed in the configuration. It also
// holds the roles that decide who may write.
//
// The proxy calls an Authenticator before anything else. An error that wraps
// ErrUnauthorized is answered 401 with the authenticator's Challenge in
// WWW-Authenticate; any other error is favaproxy's own failure (an htpasswd
// file that became unreadable or malformed) and is answered 500 and logged.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"unicode"
	"unicode/utf8"
)

// ErrUnauthorized is wrapped by every error that means "no or bad
// credentials". Its messages never say whether the user exists.
var ErrUnauthorized = errors.New("unauthorized")

// Authenticator checks a request's credentials and returns the user they
// belong to. An error wraps ErrUnauthorized when the credentials are
// missing, malformed or wrong.
type Authenticator interface {
	Authenticate(r *http.Request) (user string, err error)
}

// Challenger is implemented by authenticators that name their scheme in a
// 401's WWW-Authenticate header.
type Challenger interface {
	Challenge() string
}

// Interface guards.
var (
	_ Authenticator = (*Basic)(nil)
	_ Challenger    = (*Basic)(nil)
	_ Authenticator = (*Tokens)(nil)
	_ Challenger    = (*Tokens)(nil)
)

// Realm is the protection space named in every challenge.
const Realm = "favaproxy"

// maxUserLen bounds user names from htpasswd files and token configuration;
// they end up in logs, journals and the header forwarded to Fava.
const maxUserLen = 256

// checkUser reports why name cannot be a user name, or nil.
func checkUser(name string) error {
	switch {
	case name == "":
		return errors.New("empty user name")
	case len(name) > maxUserLen:
		return fmt.Errorf("user name longer than %d bytes", maxUserLen)
	case !utf8.ValidString(name):
		return errors.New("user name is not UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("user name %q holds a control character", name)
		}
	}
	return nil
}

// authorization returns the request's single Authorization header. A request
// with several is refused: which one counts would be a guess.
func authorization(r *http.Request) (string, error) {
	vs := r.Header.Values("Authorization")
	switch len(vs) {
	case 0:
		return "", fmt.Errorf("no credentials: %w", ErrUnauthorized)
	case 1:
		return vs[0], nil
	default:
		return "", fmt.Errorf("%d Authorization headers: %w", len(vs), ErrUnauthorized)
	}
}

// HashToken returns the sha256 hex of a bearer token: the form in which
// tokens are written into the configuration (auth.tokens[].sha256).
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// GenerateToken returns a new random bearer token (32 bytes from
// crypto/rand, base64url without padding, so a valid RFC 6750 b64token) and
// its HashToken. The token goes to the user; only the hash goes into the
// configuration.
func GenerateToken() (token, sha256Hex string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("generate token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token), nil
}

// Roles decides who may write. The zero value lets everyone write.
type Roles struct {
	readOnly []string // sorted
	all      bool
}

// NewRoles returns the roles of a configuration: the users of readOnlyUsers
// may only read, and with globalReadOnly nobody may write.
func NewRoles(readOnlyUsers []string, globalReadOnly bool) Roles {
	ro := slices.Clone(readOnlyUsers)
	slices.Sort(ro)
	return Roles{readOnly: slices.Compact(ro), all: globalReadOnly}
}

// CanWrite reports whether user may change a ledger. A refused write is
// answered 403.
func (r Roles) CanWrite(user string) bool {
	if r.all {
		return false
	}
	_, found := slices.BinarySearch(r.readOnly, user)
	return !found
}
