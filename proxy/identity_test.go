package proxy

import (
	"encoding/base64"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// countingUpstream wraps fakeFava and counts the requests it received.
func countingUpstream(tb testing.TB) (string, *atomic.Int64) {
	tb.Helper()
	var n atomic.Int64
	h := fakeFava(tb, "")
	up := startUpstream(tb, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	}))
	return up.URL, &n
}

// identityVariants are the spellings of X-Remote-User a client may send;
// the map keys are sent exactly as written.
var identityVariants = []string{"X-Remote-User", "x-remote-user", "X_Remote_User", "x_remote_user"}

// identityHeaders returns every header of h that a server could read as the
// identity header.
func identityHeaders(h http.Header) []string {
	var out []string
	for k, vs := range h {
		if normHeader(k) == "x-remote-user" {
			out = append(out, k+"="+strings.Join(vs, ","))
		}
	}
	return out
}

func TestIdentitySpoofedFromUntrustedPeer(t *testing.T) {
	upURL, _ := countingUpstream(t)
	p := startProxy(t, testConfig(t, upURL), Options{})
	for _, v := range identityVariants {
		for _, method := range []string{"GET", "PUT"} {
			t.Run(v+"/"+method, func(t *testing.T) {
				_, body := do(t, method, p.URL+"/"+testSlug+"/api/echo", "{}", http.Header{v: {"mallory"}})
				if got := identityHeaders(decodeEcho(t, body).Header); len(got) > 0 {
					t.Errorf("upstream got %q, want no identity header", got)
				}
			})
		}
	}
	if strings.Contains(p.Log.String(), "user=mallory") {
		t.Errorf("a spoofed header became the user:\n%s", p.Log.String())
	}
	if !strings.Contains(p.Log.String(), "user=anonymous") {
		t.Errorf("writes were not attributed to anonymous:\n%s", p.Log.String())
	}

	t.Run("BasicUser", func(t *testing.T) {
		h := http.Header{
			"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("alice:pw"))},
			"X_Remote_User": {"mallory"},
		}
		_, body := do(t, "PUT", p.URL+"/"+testSlug+"/api/echo", "{}", h)
		if got, want := identityHeaders(decodeEcho(t, body).Header), []string{"X-Remote-User=alice"}; strings.Join(got, ";") != strings.Join(want, ";") {
			t.Errorf("upstream got %q, want %q", got, want)
		}
	})
}

func TestIdentityFromTrustedPeer(t *testing.T) {
	upURL, hits := countingUpstream(t)
	cfg := testConfig(t, upURL)
	cfg.Identity.TrustedProxies = []string{"127.0.0.0/8"}
	p := startProxy(t, cfg, Options{})

	t.Run("Used", func(t *testing.T) {
		h := http.Header{"X-Remote-User": {"alice"}, "X_Remote_User": {"mallory"}}
		_, body := do(t, "PUT", p.URL+"/"+testSlug+"/api/echo", "{}", h)
		if got, want := identityHeaders(decodeEcho(t, body).Header), []string{"X-Remote-User=alice"}; strings.Join(got, ";") != strings.Join(want, ";") {
			t.Errorf("upstream got %q, want %q", got, want)
		}
		if !strings.Contains(p.Log.String(), "user=alice") {
			t.Errorf("the write was not attributed to alice:\n%s", p.Log.String())
		}
	})

	for _, tc := range []struct {
		name   string
		header http.Header
	}{
		{"Repeated", http.Header{"X-Remote-User": {"alice", "bob"}}},
		{"ControlCharacter", http.Header{"X-Remote-User": {"ali\tce"}}},
		{"TooLong", http.Header{"X-Remote-User": {strings.Repeat("a", maxUserLen+1)}}},
		{"ConnectionNamesIt", http.Header{"X-Remote-User": {"alice"}, "Connection": {"keep-alive, X-Remote-User"}}},
		{"ConnectionNamesVariant", http.Header{"Connection": {"x_remote_user"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, method := range []string{"GET", "PUT"} {
				before := hits.Load()
				resp, body := do(t, method, p.URL+"/"+testSlug+"/api/echo", "{}", tc.header)
				if got, want := resp.StatusCode, http.StatusBadRequest; got != want {
					t.Fatalf("%s: status=%d, want %d; body %s", method, got, want, body)
				}
				jsonBody(t, resp, body)
				if got := hits.Load() - before; got != 0 {
					t.Errorf("%s: upstream got %d requests, want 0", method, got)
				}
			}
		})
	}
}

func TestIdentityConnectionFromUntrustedPeer(t *testing.T) {
	upURL, hits := countingUpstream(t)
	p := startProxy(t, testConfig(t, upURL), Options{})
	resp, body := do(t, "PUT", p.URL+"/"+testSlug+"/api/echo", "{}", http.Header{"Connection": {"X-Remote-User"}})
	if got, want := resp.StatusCode, http.StatusBadRequest; got != want {
		t.Fatalf("status=%d, want %d; body %s", got, want, body)
	}
	if got := hits.Load(); got != 0 {
		t.Errorf("upstream got %d requests, want 0", got)
	}
}
