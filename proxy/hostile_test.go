package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/internal/favatest"
)

// hostileLedger writes a ledger with an included file, a documents folder
// holding one document and a symlink that leads out of it, and a file
// beside the ledger that is no part of it. It returns the directory and
// the main file.
func hostileLedger(tb testing.TB) (dir, main string) {
	tb.Helper()
	dir = tb.TempDir()
	files := map[string]string{
		"main.beancount": `option "title" "Test Ledger"
option "operating_currency" "USD"
option "documents" "docs"
include "other.beancount"

2024-01-01 open Assets:Bank
2024-01-01 open Expenses:Food

2024-01-02 * "Shop" "Lunch"
  Expenses:Food  10.00 USD
  Assets:Bank
`,
		"other.beancount":                      "2024-01-03 note Assets:Bank \"hello\"\n",
		"docs/Assets/Bank/2024-01-04 bill.pdf": "%PDF-1.4 bill\n",
		"secret.txt":                           "not a ledger file\n",
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(dir, "secret.txt"), filepath.Join(dir, "docs/Assets/Bank/2024-01-05 link.pdf")); err != nil {
		tb.Fatal(err)
	}
	return dir, filepath.Join(dir, "main.beancount")
}

// treeBytes returns every file under dir (symlinks as their targets)
// except favaproxy's own state (names starting with "."), path → content.
func treeBytes(tb testing.TB, dir string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != dir {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[p] = "-> " + t
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[p] = string(b)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// sameTree fails unless two treeBytes results are equal.
func sameTree(tb testing.TB, before, after map[string]string) {
	tb.Helper()
	for p, b := range before {
		if a, ok := after[p]; !ok {
			tb.Errorf("%s vanished", p)
		} else if a != b {
			tb.Errorf("%s changed:\n%s\nwas:\n%s", p, a, b)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			tb.Errorf("%s appeared", p)
		}
	}
}

// hostileProxy runs favaproxy, with loopback trusted for the identity
// header and "viewer" read-only, in front of the Fava emulator serving a
// hostileLedger, and counts the requests that reach the emulator.
func hostileProxy(tb testing.TB, tweak func(*config.Config)) (p *testProxy, dir, main string, upstream *atomic.Int64) {
	tb.Helper()
	dir, main = hostileLedger(tb)
	fv, err := favatest.New(favatest.Options{ReloadCostPerTxn: -1}, main)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { fv.Close() })
	upstream = &atomic.Int64{}
	up := startUpstream(tb, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstream.Add(1)
		fv.ServeHTTP(w, r)
	}))
	cfg := testConfig(tb, up.URL)
	cfg.Ledgers = []config.Ledger{{File: main}}
	cfg.Identity.TrustedProxies = []string{"127.0.0.1", "::1"}
	cfg.Auth.ReadOnlyUsers = []string{"viewer"}
	cfg.Limits.JSONBody = 16 << 10
	if tweak != nil {
		tweak(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	return startProxy(tb, cfg, Options{}), dir, main, upstream
}

// txn returns an add_entries body of one transaction whose fields are
// given by edit, from a valid one.
func hostileTxn(narration, account, link, meta string) string {
	return fmt.Sprintf(`{"entries":[{"t":"Transaction","date":"2024-02-01","flag":"*","payee":"Shop","narration":%q,`+
		`"tags":[],"links":[%q],"meta":{"note":%q},"postings":[{"account":%q,"amount":"5.00 USD","meta":{}},`+
		`{"account":"Assets:Bank","amount":"","meta":{}}]}]}`, narration, link, meta, account)
}

// multipartBody returns a multipart form with the given fields and a file.
func multipartBody(tb testing.TB, fields map[string]string) (body, contentType string) {
	tb.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	for k, v := range fields {
		if err := mw.WriteField(k, v); err != nil {
			tb.Fatal(err)
		}
	}
	fw, err := mw.CreateFormFile("file", "2024-02-01 new.pdf")
	if err != nil {
		tb.Fatal(err)
	}
	io.WriteString(fw, "%PDF-1.4 new\n")
	if err := mw.Close(); err != nil {
		tb.Fatal(err)
	}
	return b.String(), mw.FormDataContentType()
}

// TestHostileRequestsRefused sends one request per rule of what favaproxy
// refuses and checks its status, that Fava received nothing and that no
// byte of the ledger directory changed. Two accepted requests at the end
// show that Fava is reachable and really writes, so "unchanged" means
// something.
func TestHostileRequestsRefused(t *testing.T) {
	p, dir, main, upstream := hostileProxy(t, nil)
	api := p.URL + "/" + testSlug + "/api/"
	other := filepath.Join(dir, "other.beancount")
	secret := filepath.Join(dir, "secret.txt")
	doc := filepath.Join(dir, "docs/Assets/Bank/2024-01-04 bill.pdf")
	escape := filepath.Join(dir, "docs/Assets/Bank/2024-01-05 link.pdf")
	okTxn := hostileTxn("Lunch", "Expenses:Food", "inv-1", "fine")
	q := func(kv ...string) string {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return "?" + v.Encode()
	}
	addDoc, addDocType := multipartBody(t, map[string]string{"folder": "/tmp", "account": "Assets:Bank"})
	user := func(u string) http.Header { return http.Header{"X-Remote-User": {u}} }

	for _, tc := range []struct {
		name        string
		method, url string
		body        string
		header      http.Header
		status      int
	}{
		// add_entries: validated before any lock.
		{"InjectNarration", "PUT", api + "add_entries", hostileTxn("x\"\n2024-01-01 open Assets:Evil\n", "Expenses:Food", "inv-1", "m"), nil, 400},
		{"InjectAccount", "PUT", api + "add_entries", hostileTxn("n", "Expenses:Food\n2024-01-01 open Assets:Evil", "inv-1", "m"), nil, 400},
		{"InjectLink", "PUT", api + "add_entries", hostileTxn("n", "Expenses:Food", "inv\n2024-01-01 open Assets:Evil", "m"), nil, 400},
		{"InjectMetaValue", "PUT", api + "add_entries", hostileTxn("n", "Expenses:Food", "inv-1", "v\"\n2024-01-01 open Assets:Evil"), nil, 400},
		{"NULInNarration", "PUT", api + "add_entries", hostileTxn("a\x00b", "Expenses:Food", "inv-1", "m"), nil, 400},
		{"NotJSON", "PUT", api + "add_entries", `{"entries":`, nil, 400},
		// Limits.
		{"BodyTooLarge", "PUT", api + "add_entries", `{"entries":[],"pad":"` + strings.Repeat("x", 20<<10) + `"}`, nil, 413},
		// GET source: only the ledger's files.
		{"SourceOutsideLedger", "GET", api + "source" + q("filename", secret), "", nil, 400},
		{"SourceSystemFile", "GET", api + "source" + q("filename", "/etc/passwd"), "", nil, 400},
		{"SourceDotDot", "GET", api + "source" + q("filename", filepath.Join(dir, "docs", "..", "secret.txt")), "", nil, 400},
		{"SourceRelative", "GET", api + "source" + q("filename", "main.beancount"), "", nil, 400},
		{"SourceRepeated", "GET", api + "source" + q("filename", main, "filename", secret), "", nil, 400},
		// Documents: only inside the documents folders.
		{"AttachOutside", "PUT", api + "attach_document", fmt.Sprintf(`{"filename":%q,"entry_hash":"x"}`, secret), nil, 400},
		{"AttachInjection", "PUT", api + "attach_document", fmt.Sprintf(`{"filename":%q,"entry_hash":"x"}`, doc+"\"\n2024-01-01 open Assets:Evil"), nil, 400},
		{"MoveFromOutside", "PUT", api + "move" + q("filename", secret, "account", "Assets:Bank", "new_name", "x.pdf"), "", nil, 400},
		{"MoveToOutside", "PUT", api + "move" + q("filename", doc, "account", "Assets:Bank", "new_name", "../../../x.pdf"), "", nil, 400},
		{"MoveBadAccount", "PUT", api + "move" + q("filename", doc, "account", "..:..:..", "new_name", "x.pdf"), "", nil, 400},
		{"MoveByGetOutside", "GET", api + "move" + q("filename", secret, "account", "Assets:Bank", "new_name", "x.pdf"), "", nil, 400},
		{"DeleteOutside", "DELETE", api + "document" + q("filename", secret), "", nil, 400},
		{"DeleteThroughSymlink", "DELETE", api + "document" + q("filename", escape), "", nil, 400},
		{"DeleteDotDot", "DELETE", api + "document" + q("filename", filepath.Join(dir, "docs", "..", "secret.txt")), "", nil, 400},
		{"AddDocumentOtherFolder", "PUT", api + "add_document", addDoc, http.Header{"Content-Type": {addDocType}}, 400},
		// Identity from a trusted peer.
		{"IdentityRepeated", "PUT", api + "format_source", `{"source":""}`, http.Header{"X-Remote-User": {"alice", "bob"}}, 400},
		{"IdentityControlChar", "PUT", api + "format_source", `{"source":""}`, user("ali\tce"), 400},
		{"IdentityTooLong", "PUT", api + "format_source", `{"source":""}`, user(strings.Repeat("a", 300)), 400},
		{"IdentityNotUTF8", "PUT", api + "format_source", `{"source":""}`, user("al\xffce"), 400},
		{"ConnectionNamesIdentity", "PUT", api + "format_source", `{"source":""}`, http.Header{"Connection": {"x_remote_user"}, "X-Remote-User": {"alice"}}, 400},
		// Roles.
		{"ReadOnlyUserWrites", "PUT", api + "add_entries", okTxn, user("viewer"), 403},
		// Writes outside any ledger.
		{"WriteUnknownLedger", "PUT", p.URL + "/nope/api/add_entries", okTxn, nil, 404},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, n := treeBytes(t, dir), upstream.Load()
			resp, body := do(t, tc.method, tc.url, tc.body, tc.header)
			if got := resp.StatusCode; got != tc.status {
				t.Errorf("status=%d, want %d; body %s", got, tc.status, body)
			}
			if got := upstream.Load() - n; got != 0 {
				t.Errorf("Fava received %d requests, want none", got)
			}
			sameTree(t, before, treeBytes(t, dir))
		})
	}

	t.Run("Control", func(t *testing.T) {
		resp, body := do(t, "GET", api+"source"+q("filename", other), "", nil)
		if got, want := resp.StatusCode, http.StatusOK; got != want {
			t.Fatalf("GET source of an included file: status=%d, want %d; body %s", got, want, body)
		}
		before := treeBytes(t, dir)
		resp, body = do(t, "PUT", api+"add_entries", okTxn, user("alice"))
		if got, want := resp.StatusCode, http.StatusOK; got != want {
			t.Fatalf("valid add_entries: status=%d, want %d; body %s", got, want, body)
		}
		if after := treeBytes(t, dir); after[main] == before[main] {
			t.Errorf("valid add_entries left the ledger unchanged")
		}
	})
}

// TestSlowClientsDoNotBlockWrites opens 200 connections that dribble their
// headers and streams a 100 MiB upload, and checks that a normal write
// still completes (within 5 s) while they are all in progress.
func TestSlowClientsDoNotBlockWrites(t *testing.T) {
	p, _, main, _ := hostileProxy(t, func(c *config.Config) {
		c.Timeouts.ReadHeader = 30 * time.Second
	})
	addr := strings.TrimPrefix(p.URL, "http://")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()

	// 200 slow-loris connections: a request line and then one header line
	// now and then, never finishing the headers.
	opened := make(chan struct{}, 200)
	for i := range 200 {
		wg.Go(func() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Errorf("dial %d: %v", i, err)
				opened <- struct{}{}
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "PUT /%s/api/add_entries HTTP/1.1\r\nHost: x\r\n", testSlug)
			opened <- struct{}{}
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for j := 0; ; j++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					if _, err := fmt.Fprintf(c, "X-Slow-%d: %d\r\n", j, j); err != nil {
						return
					}
				}
			}
		})
	}
	for range 200 {
		<-opened
	}

	// One 100 MiB upload, streamed without a Content-Length.
	streaming := make(chan struct{})
	wg.Go(func() {
		pr, pw := io.Pipe()
		go func() {
			chunk := bytes.Repeat([]byte("x"), 1<<20)
			for i := 0; i < 100; i++ {
				if i == 1 {
					close(streaming)
				}
				if _, err := pw.Write(chunk); err != nil {
					return
				}
				if ctx.Err() != nil {
					break
				}
			}
			pw.Close()
		}()
		req, err := http.NewRequestWithContext(ctx, "PUT", p.URL+"/"+testSlug+"/api/add_document", pr)
		if err != nil {
			t.Error(err)
			return
		}
		req.Header.Set("Content-Type", "multipart/form-data; boundary=b")
		if resp, err := noRedirect.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
	<-streaming

	before, err := os.ReadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	req, err := http.NewRequestWithContext(wctx, "PUT", p.URL+"/"+testSlug+"/api/add_entries",
		strings.NewReader(hostileTxn("Lunch", "Expenses:Food", "inv-slow", "m")))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Remote-User", "alice")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("normal write did not complete within 5 s: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Fatalf("status=%d, want %d; body %s", got, want, body)
	}
	after, err := os.ReadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(after, []byte("^inv-slow")) || bytes.Equal(before, after) {
		t.Errorf("the write did not land in the ledger")
	}
}
