package proxy

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/favaproxy/favaproxy/auth"
	"github.com/favaproxy/favaproxy/config"
)

// seenRequest is what a recordingFava received.
type seenRequest struct {
	Method, Path string
	Header       http.Header
}

// recordingFava answers every request 200 with a small JSON body, like a
// Fava API route, and records what it received.
type recordingFava struct {
	mu   sync.Mutex // guards seen
	seen []seenRequest
}

func (u *recordingFava) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.seen = append(u.seen, seenRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone()})
	u.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"data": "ok", "mtime": "1"})
}

// Take returns and forgets what was received so far.
func (u *recordingFava) Take() []seenRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := u.seen
	u.seen = nil
	return out
}

// writeHtpasswd writes an htpasswd file of bcrypt hashes (user, password
// pairs) and returns its path.
func writeHtpasswd(tb testing.TB, pairs ...string) string {
	tb.Helper()
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		h, err := bcrypt.GenerateFromPassword([]byte(pairs[i+1]), bcrypt.MinCost)
		if err != nil {
			tb.Fatal(err)
		}
		b.WriteString(pairs[i] + ":" + string(h) + "\n")
	}
	p := filepath.Join(tb.TempDir(), "htpasswd")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

// TestAuthInsideProxy drives both authentication modes through a running
// Server: without or with bad credentials nothing reaches Fava (401 with a
// challenge); with good ones the authenticated user is the one Fava sees,
// whatever identity header the client sent, even from a trusted peer; a
// read-only user reads but gets 403 on a write; probes and /metrics need no
// credentials.
func TestAuthInsideProxy(t *testing.T) {
	aliceToken, aliceSum, err := auth.GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	viewerToken, viewerSum, err := auth.GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []struct {
		name      string
		configure func(tb testing.TB, a *config.Auth)
		scheme    string
		creds     map[string]func(h http.Header) // user → sets credentials
		bad       func(h http.Header)
	}{
		{
			name: "Basic",
			configure: func(tb testing.TB, a *config.Auth) {
				a.Mode = "basic"
				a.HtpasswdFile = writeHtpasswd(tb, "alice", "alice-pw", "viewer", "viewer-pw")
			},
			scheme: "Basic",
			creds: map[string]func(http.Header){
				"alice":  func(h http.Header) { h.Set("Authorization", basicValue("alice", "alice-pw")) },
				"viewer": func(h http.Header) { h.Set("Authorization", basicValue("viewer", "viewer-pw")) },
			},
			bad: func(h http.Header) { h.Set("Authorization", basicValue("alice", "wrong")) },
		},
		{
			name: "Token",
			configure: func(tb testing.TB, a *config.Auth) {
				a.Mode = "token"
				a.Tokens = []config.Token{{User: "alice", SHA256: aliceSum}, {User: "viewer", SHA256: viewerSum}}
			},
			scheme: "Bearer",
			creds: map[string]func(http.Header){
				"alice":  func(h http.Header) { h.Set("Authorization", "Bearer "+aliceToken) },
				"viewer": func(h http.Header) { h.Set("Authorization", "Bearer "+viewerToken) },
			},
			bad: func(h http.Header) { h.Set("Authorization", "Bearer "+aliceToken+"x") },
		},
	} {
		t.Run(mode.name, func(t *testing.T) {
			up := &recordingFava{}
			cfg := testConfig(t, startUpstream(t, up).URL)
			mode.configure(t, &cfg.Auth)
			cfg.Auth.ReadOnlyUsers = []string{"viewer"}
			// Even a trusted peer's identity header loses to authentication.
			cfg.Identity.TrustedProxies = []string{"127.0.0.1", "::1"}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			p := startProxy(t, cfg, Options{})
			read := p.URL + "/" + testSlug + "/api/ledger_data"
			write := p.URL + "/" + testSlug + "/api/format_source" // a write forwarded as it is

			headers := func(user string) http.Header {
				h := http.Header{}
				if set := mode.creds[user]; set != nil {
					set(h)
				}
				return h
			}
			wantRefused := func(t *testing.T, resp *http.Response, body string, status int) {
				t.Helper()
				if got := resp.StatusCode; got != status {
					t.Fatalf("status=%d, want %d; body %s", got, status, body)
				}
				jsonBody(t, resp, body)
				if status == http.StatusUnauthorized {
					if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, mode.scheme+" ") {
						t.Errorf("WWW-Authenticate=%q, want %s challenge", got, mode.scheme)
					}
				}
				if got := up.Take(); len(got) != 0 {
					t.Errorf("Fava received %d requests, want none: %+v", len(got), got)
				}
			}

			t.Run("NoCredentials", func(t *testing.T) {
				resp, body := do(t, "GET", read, "", nil)
				wantRefused(t, resp, body, http.StatusUnauthorized)
				resp, body = do(t, "PUT", write, `{"source":""}`, http.Header{"X-Remote-User": {"alice"}})
				wantRefused(t, resp, body, http.StatusUnauthorized)
			})
			t.Run("BadCredentials", func(t *testing.T) {
				h := http.Header{}
				mode.bad(h)
				resp, body := do(t, "GET", read, "", h)
				wantRefused(t, resp, body, http.StatusUnauthorized)
				resp, body = do(t, "PUT", write, `{"source":""}`, h)
				wantRefused(t, resp, body, http.StatusUnauthorized)
			})
			t.Run("AuthenticatedUserForwarded", func(t *testing.T) {
				h := headers("alice")
				h["X-Remote-User"] = []string{"mallory"}
				h["x_remote_user"] = []string{"mallory"}
				for _, c := range []struct{ method, url string }{{"GET", read}, {"PUT", write}} {
					resp, body := do(t, c.method, c.url, `{"source":""}`, h)
					if got, want := resp.StatusCode, http.StatusOK; got != want {
						t.Fatalf("%s status=%d, want %d; body %s", c.method, got, want, body)
					}
					seen := up.Take()
					if got, want := len(seen), 1; got != want {
						t.Fatalf("%s: Fava received %d requests, want %d", c.method, got, want)
					}
					if got, want := identityHeaders(seen[0].Header), []string{"X-Remote-User=alice"}; strings.Join(got, ";") != strings.Join(want, ";") {
						t.Errorf("%s: identity headers at Fava=%q, want %q", c.method, got, want)
					}
					if got := seen[0].Header.Get("Authorization"); got != "" {
						t.Errorf("%s: Authorization forwarded to Fava: %q", c.method, got)
					}
				}
			})
			t.Run("ReadOnlyUser", func(t *testing.T) {
				resp, body := do(t, "PUT", write, `{"source":""}`, headers("viewer"))
				wantRefused(t, resp, body, http.StatusForbidden)
				resp, body = do(t, "GET", read, "", headers("viewer"))
				if got, want := resp.StatusCode, http.StatusOK; got != want {
					t.Fatalf("read status=%d, want %d; body %s", got, want, body)
				}
				if seen := up.Take(); len(seen) != 1 || seen[0].Header.Get("X-Remote-User") != "viewer" {
					t.Errorf("Fava received %+v, want one read by viewer", seen)
				}
			})
			t.Run("OwnEndpointsOpen", func(t *testing.T) {
				for _, path := range []string{PathLivez, PathReadyz, PathHealthz, PathMetrics} {
					resp, body := do(t, "GET", p.URL+path, "", nil)
					if got, want := resp.StatusCode, http.StatusOK; got != want {
						t.Errorf("GET %s status=%d, want %d; body %.200s", path, got, want, body)
					}
				}
				up.Take() // readyz probes Fava's root
			})
			if got := p.Log.String(); strings.Contains(got, "alice-pw") || strings.Contains(got, aliceToken) {
				t.Errorf("a secret reached the log:\n%s", got)
			}
		})
	}
}

// TestReadOnlySwitch pins that the global read_only refuses every write with
// 403 before Fava sees it, and lets reads through.
func TestReadOnlySwitch(t *testing.T) {
	up := &recordingFava{}
	cfg := testConfig(t, startUpstream(t, up).URL)
	cfg.ReadOnly = true
	p := startProxy(t, cfg, Options{})
	resp, body := do(t, "PUT", p.URL+"/"+testSlug+"/api/format_source", `{"source":""}`, nil)
	if got, want := resp.StatusCode, http.StatusForbidden; got != want {
		t.Fatalf("status=%d, want %d; body %s", got, want, body)
	}
	if got := up.Take(); len(got) != 0 {
		t.Errorf("Fava received %+v, want nothing", got)
	}
	resp, _ = do(t, "GET", p.URL+"/"+testSlug+"/api/ledger_data", "", nil)
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Fatalf("read status=%d, want %d", got, want)
	}
}

// basicValue returns the Authorization value of HTTP Basic credentials.
func basicValue(user, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password))
}
