package proxy

import (
	"errors"
	"fmt"
	"math"
	"net/http"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/auth"
	"github.com/favaproxy/favaproxy/config"
)

// Authentication inside favaproxy (auth.mode basic or token) runs before
// anything else a request does: before its ledger is looked up, before its
// body is read and before any lock. The authenticated user is the request's
// identity; an identity header the client sent is ignored and replaced by
// that user on the way to Fava, whatever the peer. The Authorization header
// is consumed: Fava never sees it.
//
// favaproxy's own endpoints (/livez, /readyz, /healthz and /metrics) are
// not authenticated, so that probes and scrapers need no credentials; they
// reveal no ledger content.

// newAuthenticator returns the authenticator of cfg.Auth.Mode, nil for none.
func newAuthenticator(a config.Auth) (auth.Authenticator, error) {
	switch a.Mode {
	case "":
		return nil, nil
	case "basic":
		b, err := auth.NewBasic(a.HtpasswdFile)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		return b, nil
	case "token":
		t, err := auth.NewTokens(a.Tokens)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		return t, nil
	default:
		return nil, fmt.Errorf("auth: unknown mode %q", a.Mode)
	}
}

// unauthorizedError is a 401 whose answer carries a WWW-Authenticate
// challenge.
type unauthorizedError struct {
	err       error
	challenge string
}

func (e *unauthorizedError) Error() string { return e.err.Error() }
func (e *unauthorizedError) Unwrap() error { return e.err }

// who decides a request's user. Without authentication it is the
// identifier's decision (identity header of a trusted peer, else the Basic
// user name, else anonymous). With authentication it is the authenticated
// user, and a request without valid credentials is refused 401.
func (s *Server) who(r *http.Request, trusted bool) (favaproxy.User, error) {
	if s.authn == nil {
		return s.id.identify(r, trusted)
	}
	if err := s.id.checkConnection(r); err != nil {
		return "", err
	}
	name, err := s.authn.Authenticate(r)
	var wait auth.RetryAfter
	if errors.As(err, &wait) {
		return "", favaproxy.WithRetryAfter(fmt.Errorf("authenticate: %w: %w",
			favaproxy.Errorf(favaproxy.ETooMany, "too many failed attempts to authenticate; retry later"), err),
			int(math.Ceil(wait.RetryAfter().Seconds())))
	}
	if err != nil {
		if !errors.Is(err, auth.ErrUnauthorized) {
			return "", fmt.Errorf("authenticate: %w: %w",
				favaproxy.Errorf(favaproxy.EInternal, "authentication is unavailable"), err)
		}
		ue := &unauthorizedError{err: fmt.Errorf("authenticate: %w: %w",
			favaproxy.Errorf(favaproxy.EUnauthorized, "authentication required"), err)}
		if c, ok := s.authn.(auth.Challenger); ok {
			ue.challenge = c.Challenge()
		}
		return "", ue
	}
	if err := checkUser(name); err != nil {
		return "", fmt.Errorf("authenticate: %w", err)
	}
	// Consumed here; never forwarded to Fava.
	r.Header.Del("Authorization")
	return favaproxy.User(name), nil
}

// forbidWrite refuses a write by a user who may only read (a read-only user,
// or everyone when favaproxy is read-only).
func (s *Server) forbidWrite(u favaproxy.User) error {
	if s.roles.CanWrite(string(u)) {
		return nil
	}
	if s.cfg.ReadOnly {
		return favaproxy.Errorf(favaproxy.EForbidden, "favaproxy is read-only")
	}
	return favaproxy.Errorf(favaproxy.EForbidden, "user %s may only read", u)
}

// setChallenge adds the WWW-Authenticate header of a 401 to w.
func setChallenge(w http.ResponseWriter, err error) {
	var ue *unauthorizedError
	if errors.As(err, &ue) && ue.challenge != "" {
		w.Header().Set("WWW-Authenticate", ue.challenge)
	}
}
