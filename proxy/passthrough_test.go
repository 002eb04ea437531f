package proxy

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fakeFava answers like Fava for a few routes, and echoes what it received
// on /<slug>/api/echo.
func fakeFava(tb testing.TB, prefix string) http.Handler {
	tb.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+prefix+"/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, prefix+"/"+testSlug+"/income_statement/", http.StatusFound)
	})
	mux.HandleFunc("GET "+prefix+"/"+testSlug+"/income_statement/", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("ETag", `"v1"`)
		h.Add("Set-Cookie", "a=1; Path=/")
		h.Add("Set-Cookie", "b=2; Path=/")
		h.Set("X-Fava", "page")
		w.WriteHeader(http.StatusOK)
		io.WriteString(w, "<html><body>Income Statement \u20ac</body></html>\n")
	})
	mux.HandleFunc("GET "+prefix+"/static/app.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		w.Header().Set("Cache-Control", "max-age=3600")
		io.WriteString(w, "console.log('fava');\n")
	})
	mux.HandleFunc("GET "+prefix+"/"+testSlug+"/api/ledger_data", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data": {"accounts": ["Assets:Bank"]}, "mtime": "1"}`)
	})
	mux.HandleFunc("GET "+prefix+"/"+testSlug+"/api/errors", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"error": "boom"}`)
	})
	mux.HandleFunc(prefix+"/"+testSlug+"/api/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "secret")
		body, _ := io.ReadAll(r.Body)
		json.NewEncoder(w).Encode(map[string]any{
			"method": r.Method, "path": r.URL.Path, "rawpath": r.URL.RawPath, "query": r.URL.RawQuery,
			"host": r.Host, "header": r.Header, "body": string(body),
		})
	})
	return mux
}

// strongTag is the form of favaproxy's ledger versions.
var strongTag = regexp.MustCompile(`^"[0-9a-f]{32}"$`)

// echoed is what fakeFava's echo route saw.
type echoed struct {
	Method, Path, RawPath, Query, Host, Body string
	Header                                   http.Header
}

func decodeEcho(tb testing.TB, body string) echoed {
	tb.Helper()
	var e echoed
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		tb.Fatalf("echo body %q: %v", body, err)
	}
	return e
}

// sameAnswer fails unless the proxied answer equals the direct one: status,
// every header but Date, and body; the proxied answer also carries exactly
// one X-Request-ID, which favaproxy adds, and, on a successful read of a
// ledger that Fava gave no ETag, the ledger's version as its ETag
// (etag_test.go pins its value).
func sameAnswer(tb testing.TB, direct, proxied *http.Response, dbody, pbody string) {
	tb.Helper()
	if got, want := proxied.StatusCode, direct.StatusCode; got != want {
		tb.Errorf("status=%d, want %d", got, want)
	}
	dh, ph := direct.Header.Clone(), proxied.Header.Clone()
	dh.Del("Date")
	ph.Del("Date")
	if got := ph.Values("X-Request-ID"); len(got) != 1 || got[0] == "" {
		tb.Errorf("X-Request-ID=%q, want one", got)
	}
	ph.Del("X-Request-ID")
	if dh.Get("ETag") == "" {
		if et := ph.Get("ETag"); et != "" && (proxied.StatusCode >= 300 || !strongTag.MatchString(et)) {
			tb.Errorf("ETag=%q on a %d answer, want none or a strong tag on a success", et, proxied.StatusCode)
		}
		ph.Del("ETag")
	}
	if !reflect.DeepEqual(ph, dh) {
		tb.Errorf("headers=%v, want %v", ph, dh)
	}
	if pbody != dbody {
		tb.Errorf("body=%q, want %q", pbody, dbody)
	}
}

func TestPassThroughByteForByte(t *testing.T) {
	up := startUpstream(t, fakeFava(t, ""))
	p := startProxy(t, testConfig(t, up.URL), Options{})
	for _, tc := range []struct{ name, path string }{
		{"Page", "/" + testSlug + "/income_statement/"},
		{"Static", "/static/app.js"},
		{"APIGet", "/" + testSlug + "/api/ledger_data"},
		{"APIError", "/" + testSlug + "/api/errors"},
		{"Redirect", "/"},
		{"UnknownRoute", "/" + testSlug + "/nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dresp, dbody := do(t, "GET", up.URL+tc.path, "", nil)
			presp, pbody := do(t, "GET", p.URL+tc.path, "", nil)
			sameAnswer(t, dresp, presp, dbody, pbody)
		})
	}
	t.Run("RedirectLocationUntouched", func(t *testing.T) {
		resp, _ := do(t, "GET", p.URL+"/", "", nil)
		if got, want := resp.StatusCode, http.StatusFound; got != want {
			t.Fatalf("status=%d, want %d", got, want)
		}
		if got, want := resp.Header.Get("Location"), "/"+testSlug+"/income_statement/"; got != want {
			t.Errorf("Location=%q, want %q", got, want)
		}
	})
	t.Run("Options", func(t *testing.T) {
		resp, body := do(t, "OPTIONS", p.URL+"/"+testSlug+"/api/echo", "", nil)
		if got, want := resp.StatusCode, http.StatusOK; got != want {
			t.Fatalf("status=%d, want %d", got, want)
		}
		if got, want := decodeEcho(t, body).Method, "OPTIONS"; got != want {
			t.Errorf("method=%q, want %q", got, want)
		}
	})
}

func TestPassThroughStreams(t *testing.T) {
	release := make(chan struct{})
	up := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second\n")
	}))
	p := startProxy(t, testConfig(t, up.URL), Options{})

	resp, err := http.Get(p.URL + "/" + testSlug + "/api/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	first := make(chan string, 1)
	go func() {
		line, _ := br.ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		if got, want := line, "first\n"; got != want {
			t.Fatalf("first line=%q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		close(release)
		t.Fatal("the first part did not arrive while the upstream held the rest")
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(rest), "second\n"; got != want {
		t.Errorf("rest=%q, want %q", got, want)
	}
}

func TestPassThroughHeaders(t *testing.T) {
	up := startUpstream(t, fakeFava(t, ""))
	spoof := http.Header{
		"X-Forwarded-For":   {"6.6.6.6"},
		"X-Forwarded-Host":  {"evil.example"},
		"X-Forwarded-Proto": {"https"},
		"Connection":        {"X-Hop"},
		"X-Hop":             {"1"},
		"Keep-Alive":        {"timeout=5"},
		"X-Request-Id":      {"req-42"},
	}
	t.Run("UntrustedPeer", func(t *testing.T) {
		p := startProxy(t, testConfig(t, up.URL), Options{})
		resp, body := do(t, "GET", p.URL+"/"+testSlug+"/api/echo?x=1", "", spoof)
		e := decodeEcho(t, body)
		if got, want := e.Header.Get("X-Forwarded-For"), "127.0.0.1"; got != want {
			t.Errorf("X-Forwarded-For=%q, want %q", got, want)
		}
		if got, want := e.Header.Get("X-Forwarded-Host"), strings.TrimPrefix(p.URL, "http://"); got != want {
			t.Errorf("X-Forwarded-Host=%q, want %q", got, want)
		}
		if got, want := e.Header.Get("X-Forwarded-Proto"), "http"; got != want {
			t.Errorf("X-Forwarded-Proto=%q, want %q", got, want)
		}
		for _, h := range []string{"X-Hop", "Keep-Alive", "Connection"} {
			if v := e.Header.Values(h); len(v) > 0 {
				t.Errorf("hop-by-hop %s=%q reached the upstream", h, v)
			}
		}
		if got, want := e.Header.Get("X-Request-Id"), "req-42"; got != want {
			t.Errorf("X-Request-Id=%q, want %q", got, want)
		}
		if got, want := e.Host, strings.TrimPrefix(p.URL, "http://"); got != want {
			t.Errorf("Host=%q, want the client's %q", got, want)
		}
		if got, want := e.Query, "x=1"; got != want {
			t.Errorf("query=%q, want %q", got, want)
		}
		if v := resp.Header.Values("X-Resp-Hop"); len(v) > 0 {
			t.Errorf("hop-by-hop response header X-Resp-Hop=%q reached the client", v)
		}
	})
	t.Run("TrustedPeer", func(t *testing.T) {
		cfg := testConfig(t, up.URL)
		cfg.Identity.TrustedProxies = []string{"127.0.0.1"}
		p := startProxy(t, cfg, Options{})
		_, body := do(t, "GET", p.URL+"/"+testSlug+"/api/echo", "", spoof)
		e := decodeEcho(t, body)
		if got, want := e.Header.Get("X-Forwarded-For"), "6.6.6.6, 127.0.0.1"; got != want {
			t.Errorf("X-Forwarded-For=%q, want %q", got, want)
		}
		if got, want := e.Header.Get("X-Forwarded-Host"), "evil.example"; got != want {
			t.Errorf("X-Forwarded-Host=%q, want %q", got, want)
		}
		if got, want := e.Header.Get("X-Forwarded-Proto"), "https"; got != want {
			t.Errorf("X-Forwarded-Proto=%q, want %q", got, want)
		}
	})
	t.Run("WriteUntrustedPeer", func(t *testing.T) {
		p := startProxy(t, testConfig(t, up.URL), Options{})
		h := spoof.Clone()
		h.Set("Idempotency-Key", "k1")
		h.Set("X-Idempotency-Key", "k2")
		h.Set("Content-Type", "application/json")
		resp, body := do(t, "PUT", p.URL+"/"+testSlug+"/api/echo", `{"a":1}`, h)
		e := decodeEcho(t, body)
		if got, want := e.Body, `{"a":1}`; got != want {
			t.Errorf("body=%q, want %q", got, want)
		}
		if got, want := e.Header.Get("X-Forwarded-For"), "127.0.0.1"; got != want {
			t.Errorf("X-Forwarded-For=%q, want %q", got, want)
		}
		for _, h := range []string{"X-Hop", "Keep-Alive", "Idempotency-Key", "X-Idempotency-Key"} {
			if v := e.Header.Values(h); len(v) > 0 {
				t.Errorf("%s=%q reached the upstream", h, v)
			}
		}
		// Writes go on a fresh connection each: Connection: close is the
		// transport's own, not the client's.
		if got, want := e.Header.Values("Connection"), []string{"close"}; !reflect.DeepEqual(got, want) {
			t.Errorf("Connection=%q, want %q", got, want)
		}
		if got, want := resp.StatusCode, http.StatusOK; got != want {
			t.Errorf("status=%d, want %d", got, want)
		}
	})
}

func TestPassThroughPrefixedUpstream(t *testing.T) {
	up := startUpstream(t, fakeFava(t, "/fava"))
	p := startProxy(t, testConfig(t, up.URL+"/fava/"), Options{})
	for _, path := range []string{"/fava/" + testSlug + "/api/echo", "/" + testSlug + "/api/echo"} {
		for _, method := range []string{"GET", "PUT"} {
			_, body := do(t, method, p.URL+path, "", nil)
			if got, want := decodeEcho(t, body).Path, "/fava/"+testSlug+"/api/echo"; got != want {
				t.Errorf("%s %s reached the upstream as %q, want %q", method, path, got, want)
			}
		}
	}
	resp, _ := do(t, "GET", p.URL+"/fava/", "", nil)
	if got, want := resp.Header.Get("Location"), "/fava/"+testSlug+"/income_statement/"; got != want {
		t.Errorf("Location=%q, want %q", got, want)
	}
}

func TestUpstreamDown(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	p := startProxy(t, testConfig(t, down.URL), Options{})
	for _, tc := range []struct {
		name, method, path string
		json               bool
	}{
		{"APIRead", "GET", "/" + testSlug + "/api/ledger_data", true},
		{"Page", "GET", "/" + testSlug + "/income_statement/", false},
		{"Static", "GET", "/static/app.js", false},
		{"Write", "PUT", "/" + testSlug + "/api/add_entries", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, tc.method, p.URL+tc.path, `{"entries":[]}`, nil)
			if got, want := resp.StatusCode, http.StatusBadGateway; got != want {
				t.Fatalf("status=%d, want %d", got, want)
			}
			if tc.json {
				if _, ok := jsonBody(t, resp, body)["error"].(string); !ok {
					t.Errorf("body %q has no error", body)
				}
			} else if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") || !strings.Contains(body, "502") {
				t.Errorf("Content-Type=%q body=%q, want a short HTML page", ct, body)
			}
		})
	}
}

func TestUpstreamTimeout(t *testing.T) {
	stop := make(chan struct{})
	up := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	defer close(stop)
	cfg := testConfig(t, up.URL)
	cfg.Timeouts.Upstream = 100 * time.Millisecond
	p := startProxy(t, cfg, Options{})
	for _, method := range []string{"GET", "PUT"} {
		resp, body := do(t, method, p.URL+"/"+testSlug+"/api/ledger_data", "", nil)
		if got, want := resp.StatusCode, http.StatusGatewayTimeout; got != want {
			t.Fatalf("%s: status=%d, want %d", method, got, want)
		}
		jsonBody(t, resp, body)
	}
}
