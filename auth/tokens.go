package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/favaproxy/favaproxy/config"
)

// maxTokenLen bounds a bearer token; longer ones are refused unhashed.
const maxTokenLen = 4096

// Tokens authenticates bearer tokens (RFC 6750, `Authorization: Bearer
// <token>`). The configuration holds only each token's sha256; the sha256 of
// a request's token is compared with every configured one in constant time,
// so neither a token's prefix nor its position in the list shows in the
// response time.
type Tokens struct {
	sums  [][sha256.Size]byte
	users []string // users[i] owns sums[i]
}

// NewTokens checks tokens: every user named and well-formed, every sha256 64
// hex digits and none twice.
func NewTokens(tokens []config.Token) (*Tokens, error) {
	t := &Tokens{}
	seen := map[[sha256.Size]byte]int{}
	var errs []error
	for i, tok := range tokens {
		if err := checkUser(tok.User); err != nil {
			errs = append(errs, fmt.Errorf("auth.tokens[%d].user: %w", i, err))
		}
		raw, err := hex.DecodeString(tok.SHA256)
		if err != nil || len(raw) != sha256.Size {
			errs = append(errs, fmt.Errorf("auth.tokens[%d].sha256: want 64 hex digits", i))
			continue
		}
		sum := [sha256.Size]byte(raw)
		if j, dup := seen[sum]; dup {
			errs = append(errs, fmt.Errorf("auth.tokens[%d].sha256: same token as auth.tokens[%d]", i, j))
			continue
		}
		seen[sum] = i
		t.sums = append(t.sums, sum)
		t.users = append(t.users, tok.User)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

// Challenge returns the WWW-Authenticate value of a 401.
func (t *Tokens) Challenge() string {
	return `Bearer realm="` + Realm + `"`
}

// Authenticate returns the user whose token the request bears.
func (t *Tokens) Authenticate(r *http.Request) (string, error) {
	h, err := authorization(r)
	if err != nil {
		return "", err
	}
	token, ok := parseBearer(h)
	if !ok {
		return "", fmt.Errorf("malformed bearer credentials: %w", ErrUnauthorized)
	}
	sum := sha256.Sum256([]byte(token))
	match := -1
	for i := range t.sums {
		// Every configured sum is compared; no early exit.
		eq := subtle.ConstantTimeCompare(sum[:], t.sums[i][:])
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return "", fmt.Errorf("unknown token: %w", ErrUnauthorized)
	}
	return t.users[match], nil
}

// parseBearer parses `Bearer <b64token>` (RFC 6750 section 2.1): the scheme
// is case-insensitive, the token is 1*( ALPHA / DIGIT / "-" / "." / "_" /
// "~" / "+" / "/" ) *"=".
func parseBearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	if token == "" || len(token) > maxTokenLen {
		return "", false
	}
	body := strings.TrimRight(token, "=")
	if body == "" {
		return "", false
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			return "", false
		}
	}
	return token, true
}
