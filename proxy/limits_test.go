package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestBodyLimit(t *testing.T) {
	upURL, hits := countingUpstream(t)
	cfg := testConfig(t, upURL)
	cfg.Limits.JSONBody = 100
	cfg.Limits.SourceBody = 1000
	cfg.Limits.UploadBody = 2000
	p := startProxy(t, cfg, Options{})
	base := p.URL + "/" + testSlug + "/api/"
	for _, tc := range []struct {
		name, path, ctype string
		size              int
		chunked           bool
		want              int
	}{
		{"JSONOver", "add_entries", "application/json", 101, false, http.StatusRequestEntityTooLarge},
		{"JSONOverChunked", "add_entries", "application/json", 101, true, http.StatusRequestEntityTooLarge},
		{"JSONAtLimit", "echo", "application/json", 100, false, http.StatusOK},
		{"SourceOver", "source", "application/json", 1001, true, http.StatusRequestEntityTooLarge},
		{"UploadOver", "add_document", "multipart/form-data; boundary=x", 2001, false, http.StatusRequestEntityTooLarge},
		{"UploadWithinLimit", "echo", "multipart/form-data; boundary=x", 1500, true, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			var body io.Reader = strings.NewReader(strings.Repeat("x", tc.size))
			if tc.chunked {
				body = io.MultiReader(body) // unknown length: sent chunked
			}
			req, err := http.NewRequest("PUT", base+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tc.ctype)
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got, want := resp.StatusCode, tc.want; got != want {
				t.Fatalf("status=%d, want %d; body %s", got, want, b)
			}
			if tc.want != http.StatusOK {
				jsonBody(t, resp, string(b))
				if got := hits.Load() - before; got != 0 {
					t.Errorf("upstream got %d requests, want 0", got)
				}
			}
		})
	}
}

func TestUnknownLedgerWrite(t *testing.T) {
	upURL, hits := countingUpstream(t)
	p := startProxy(t, testConfig(t, upURL), Options{})
	for _, path := range []string{"/nope/api/add_entries", "/static/x", "/", "/" + testSlug + ";x/api/source"} {
		resp, body := do(t, "PUT", p.URL+path, "{}", nil)
		if got, want := resp.StatusCode, http.StatusNotFound; got != want {
			t.Fatalf("PUT %s: status=%d, want %d", path, got, want)
		}
		jsonBody(t, resp, body)
	}
	if got := hits.Load(); got != 0 {
		t.Errorf("upstream got %d requests, want 0", got)
	}
}

// TestDirtyPathWriteIsLockedAndCleaned pins that a write whose path needs
// cleaning reaches Fava as the cleaned path that was classified.
func TestDirtyPathWriteIsLockedAndCleaned(t *testing.T) {
	up := startUpstream(t, fakeFava(t, ""))
	p := startProxy(t, testConfig(t, up.URL), Options{})
	for _, target := range []string{"/x/../" + testSlug + "/api/echo", "/./" + testSlug + "//api//echo", "/" + testSlug + "/%61pi/echo"} {
		req, err := http.NewRequest("PUT", p.URL+"/", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Opaque = target // sent as written, not cleaned by the client
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got, want := resp.StatusCode, http.StatusOK; got != want {
			t.Fatalf("PUT %s: status=%d, want %d; body %s", target, got, want, b)
		}
		if got, want := decodeEcho(t, string(b)).Path, "/"+testSlug+"/api/echo"; got != want {
			t.Errorf("PUT %s reached Fava as %q, want %q", target, got, want)
		}
	}
	if got := strings.Count(p.Log.String(), "msg=write"); got != 3 {
		t.Errorf("%d writes logged, want 3", got)
	}
}
