package proxy

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestLimits checks that each route's body cap answers 413 before Fava is
// called (JSON writes, source, uploads, with and without Content-Length),
// that oversized headers are refused by the server (431), and that the
// server carries the configured timeouts.
func TestLimits(t *testing.T) {
	up := &recordingFava{}
	cfg := testConfig(t, startUpstream(t, up).URL)
	cfg.Limits.JSONBody = 1 << 10
	cfg.Limits.SourceBody = 4 << 10
	cfg.Limits.UploadBody = 16 << 10
	cfg.Limits.HeaderBytes = 8 << 10
	cfg.Timeouts.ReadHeader = 7 * time.Second
	cfg.Timeouts.Read = 11 * time.Second
	cfg.Timeouts.Idle = 13 * time.Second
	p := startProxy(t, cfg, Options{})
	api := p.URL + "/" + testSlug + "/api/"

	upload := func(size int) (string, string) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		fw, _ := mw.CreateFormFile("file", "f.pdf")
		fw.Write(bytes.Repeat([]byte("x"), size))
		mw.Close()
		return b.String(), mw.FormDataContentType()
	}
	small, smallType := upload(8 << 10)
	big, bigType := upload(20 << 10)
	for _, tc := range []struct {
		name, method, url, body, contentType string
		chunked                              bool
		status                               int
	}{
		{"JSONUnderCap", "PUT", api + "format_source", `{"source":"` + strings.Repeat("x", 900) + `"}`, "application/json", false, 200},
		{"JSONOverCap", "PUT", api + "format_source", `{"source":"` + strings.Repeat("x", 2000) + `"}`, "application/json", false, 413},
		{"JSONOverCapChunked", "PUT", api + "format_source", `{"source":"` + strings.Repeat("x", 2000) + `"}`, "application/json", true, 413},
		// 0: anything but 413 (the source handler may refuse this body for
		// other reasons).
		{"SourceUnderCap", "PUT", api + "source", `{"source":"` + strings.Repeat("x", 3000) + `"}`, "application/json", false, 0},
		{"SourceOverCap", "PUT", api + "source", `{"source":"` + strings.Repeat("x", 5000) + `"}`, "application/json", true, 413},
		{"UploadUnderCap", "PUT", api + "upload_import_file", small, smallType, false, 200},
		{"UploadOverCap", "PUT", api + "upload_import_file", big, bigType, true, 413},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up.Take()
			req, err := http.NewRequest(tc.method, tc.url, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.chunked {
				req.ContentLength = -1
				req.Body = io.NopCloser(struct{ io.Reader }{strings.NewReader(tc.body)})
				req.GetBody = nil
			}
			req.Header.Set("Content-Type", tc.contentType)
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if tc.status == 0 {
				if resp.StatusCode == http.StatusRequestEntityTooLarge {
					t.Fatalf("status=413 under the cap")
				}
				return
			}
			if got := resp.StatusCode; got != tc.status {
				t.Fatalf("status=%d, want %d", got, tc.status)
			}
			if n := len(up.Take()); (tc.status == 200) != (n == 1) {
				t.Errorf("Fava received %d requests for a %d", n, tc.status)
			}
		})
	}

	t.Run("HeadersTooLarge", func(t *testing.T) {
		resp, _ := do(t, "GET", api+"ledger_data", "", http.Header{"X-Big": {strings.Repeat("x", 16<<10)}})
		if got, want := resp.StatusCode, http.StatusRequestHeaderFieldsTooLarge; got != want {
			t.Fatalf("status=%d, want %d", got, want)
		}
		if n := len(up.Take()); n != 0 {
			t.Errorf("Fava received %d requests, want none", n)
		}
	})
	t.Run("ServerTimeouts", func(t *testing.T) {
		srv := p.Server.srv
		if srv.ReadHeaderTimeout != 7*time.Second || srv.ReadTimeout != 11*time.Second || srv.IdleTimeout != 13*time.Second {
			t.Errorf("timeouts read_header=%s read=%s idle=%s, want 7s 11s 13s", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.IdleTimeout)
		}
		if got, want := srv.MaxHeaderBytes, 8<<10; got != want {
			t.Errorf("MaxHeaderBytes=%d, want %d", got, want)
		}
	})
}
