package proxy

import (
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/internal/favatest"
)

// emuStyles are the wire styles every conflict scenario runs in.
var emuStyles = []string{favatest.Style127, favatest.Style130, favatest.Style1308, favatest.Style13015}

// conflictLedger is the starting ledger of the conflict tests.
const conflictLedger = `option "title" "Test Ledger"
option "operating_currency" "USD"

2024-01-01 open Assets:Bank
2024-01-01 open Expenses:Food
2024-01-01 open Equity:Opening

2024-02-01 * "Shop" "Bread"
  Expenses:Food   2.50 USD
  Assets:Bank

2024-02-02 * "Shop" "Milk"
  Expenses:Food   1.00 USD
  Assets:Bank

2024-02-03 * "Shop" "Eggs"
  Expenses:Food   3.00 USD
  Assets:Bank
`

// emuEnv is favaproxy in front of the Fava emulator on a real ledger file.
type emuEnv struct {
	tb    testing.TB
	style string
	main  string
	emu   *favatest.Server
	up    *httptest.Server
	p     *testProxy
}

// emuOpts adjust an emuEnv before its proxy starts.
type emuOpts struct {
	// upstream wraps the emulator's handler (an outside writer, a
	// connection that breaks).
	upstream func(http.Handler) http.Handler
	// cfg adjusts the configuration.
	cfg func(*config.Config)
	// options are the server's options.
	options Options
	// sleeps, if set, records the retries' waits instead of sleeping.
	sleeps *fakeSleeps
	// main reuses a ledger file instead of writing conflictLedger.
	main string
	// upstreamURL reuses a running upstream.
	upstreamURL string
}

// startEmu writes conflictLedger, serves it with the emulator in style and
// starts favaproxy in front of it.
func startEmu(tb testing.TB, style string, o emuOpts) *emuEnv {
	tb.Helper()
	env := &emuEnv{tb: tb, style: style, main: o.main}
	if env.main == "" {
		env.main = filepath.Join(tb.TempDir(), "main.beancount")
		writeText(tb, env.main, conflictLedger)
	}
	upURL := o.upstreamURL
	if upURL == "" {
		emu, err := favatest.New(favatest.Options{Style: style, ReloadCostPerTxn: -1}, env.main)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { emu.Close() })
		env.emu = emu
		var h http.Handler = emu
		if o.upstream != nil {
			h = o.upstream(h)
		}
		env.up = startUpstream(tb, h)
		upURL = env.up.URL
	}
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Upstream = upURL
	cfg.Ledgers = []config.Ledger{{File: env.main}}
	cfg.ShutdownGrace = 5 * time.Second
	cfg.Durability.Quiet = 20 * time.Millisecond // Fava that does not answer is gone at once here
	if o.cfg != nil {
		o.cfg(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	if o.sleeps != nil {
		o.sleeps.install(&o.options)
	}
	env.p = startServer(tb, cfg, o.options, nil)
	if o.sleeps != nil {
		o.sleeps.srv = env.p.Server
	}
	return env
}

// api returns the URL of API endpoint name of the test ledger at the proxy.
func (e *emuEnv) api(name string, q url.Values) string {
	u := e.p.URL + "/" + testSlug + "/api/" + name
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// call sends a JSON request through the proxy and decodes the answer.
func (e *emuEnv) call(method, name string, q url.Values, body any) (*http.Response, map[string]any) {
	e.tb.Helper()
	return e.callWith(method, name, q, body, nil)
}

// callWith is call with the headers of extra added (replacing any of the
// same name).
func (e *emuEnv) callWith(method, name string, q url.Values, body any, extra http.Header) (*http.Response, map[string]any) {
	e.tb.Helper()
	s := ""
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.tb.Fatal(err)
		}
		s = string(b)
	}
	h := http.Header{"Content-Type": {"application/json"}}
	for k, v := range extra {
		h[k] = v
	}
	resp, text := do(e.tb, method, e.api(name, q), s, h)
	return resp, jsonBody(e.tb, resp, text)
}

// getSource reads a file's source through the proxy.
func (e *emuEnv) getSource(file string) (text, sum string) {
	e.tb.Helper()
	resp, m := e.call(http.MethodGet, "source", url.Values{"filename": {file}}, nil)
	if resp.StatusCode != http.StatusOK {
		e.tb.Fatalf("GET source: status %d %v", resp.StatusCode, m)
	}
	d := m["data"].(map[string]any)
	return d["source"].(string), d["sha256sum"].(string)
}

// read returns the ledger file's bytes as a string.
func (e *emuEnv) read() string { e.tb.Helper(); return readText(e.tb, e.main) }

// entry is an entry as a client finds it: Fava's hash and its slice.
type entry struct {
	hash, slice, sum string
}

// findEntry returns the entry whose first line starts with head in the
// file as it is now, with the hash Fava (the emulator) gives it: md5 of
// file, line number and slice, like Beancount's hash_entry depends on
// them. It checks with GET context that the hash resolves.
func (e *emuEnv) findEntry(head string) entry {
	e.tb.Helper()
	lines := checksum.Lines(string(checksum.Normalize([]byte(e.read()))))
	for i, l := range lines {
		if strings.HasPrefix(l, head) {
			slice := checksum.JoinSlice(lines[i : i+checksum.EntryLines(lines, i)])
			sum := md5.Sum([]byte(e.main + "\x00" + strconv.Itoa(i+1) + "\x00" + slice))
			en := entry{hash: hex.EncodeToString(sum[:]), slice: slice, sum: checksum.String(slice)}
			if resp, m := e.call(http.MethodGet, "context", url.Values{"entry_hash": {en.hash}}, nil); resp.StatusCode != http.StatusOK || m["error"] != nil {
				e.tb.Fatalf("context of %q: status %d %v", head, resp.StatusCode, m)
			}
			return en
		}
	}
	e.tb.Fatalf("no entry starts with %q", head)
	return entry{}
}

// wantSuccess fails unless the answer is a success in the env's style.
func (e *emuEnv) wantSuccess(what string, resp *http.Response, m map[string]any) {
	e.tb.Helper()
	if resp.StatusCode != http.StatusOK || m["error"] != nil || m["data"] == nil {
		e.tb.Fatalf("%s: status %d body %v, want a success", what, resp.StatusCode, m)
	}
	if _, has := m["success"]; has != (e.style == favatest.Style127) {
		e.tb.Fatalf("%s: body %v, want the %s wire style", what, m, e.style)
	}
}

// wantConflict fails unless the answer is favaproxy's 409 of kind, and
// returns its conflict object.
func (e *emuEnv) wantConflict(what string, resp *http.Response, m map[string]any, kind string) map[string]any {
	e.tb.Helper()
	c, _ := m["conflict"].(map[string]any)
	if resp.StatusCode != http.StatusConflict || c == nil || m["error"] == nil {
		e.tb.Fatalf("%s: status %d body %v, want 409 with a conflict", what, resp.StatusCode, m)
	}
	if got := c["kind"]; got != kind {
		e.tb.Fatalf("%s: conflict kind %v, want %s", what, got, kind)
	}
	if _, has := m["success"]; has != (e.style == favatest.Style127) {
		e.tb.Fatalf("%s: body %v, want the %s wire style", what, m, e.style)
	}
	return c
}

// writeText writes a file.
func writeText(tb testing.TB, path, text string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// readText reads a file.
func readText(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// outsideWriter is an upstream in front of the emulator that, before the
// first `times` PUT source requests reach it, changes the ledger file the
// way a writer that does not take favaproxy's lock would (an editor, a
// script): it appends a comment line.
type outsideWriter struct {
	next  http.Handler
	file  string
	times int

	// mu guards puts.
	mu   sync.Mutex
	puts int
}

func (o *outsideWriter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/api/source") {
		o.mu.Lock()
		o.puts++
		n := o.puts
		o.mu.Unlock()
		if n <= o.times {
			f, err := os.OpenFile(o.file, os.O_APPEND|os.O_WRONLY, 0)
			if err == nil {
				_, _ = f.WriteString("; outside " + strconv.Itoa(n) + "\n")
				f.Close()
			}
		}
	}
	o.next.ServeHTTP(w, r)
}

// startOutside is startEmu in style behind an outsideWriter that changes
// the ledger before the first times PUT source requests, with every backoff
// wait recorded instead of slept; cfg, when not nil, adjusts the
// configuration.
func startOutside(tb testing.TB, style string, times int, cfg func(*config.Config)) (*emuEnv, *outsideWriter, *fakeSleeps) {
	tb.Helper()
	var ow *outsideWriter
	sleeps := &fakeSleeps{}
	e := startEmu(tb, style, emuOpts{
		upstream: func(h http.Handler) http.Handler { ow = &outsideWriter{next: h, times: times}; return ow },
		sleeps:   sleeps,
		cfg:      cfg,
	})
	ow.file = e.main
	return e, ow, sleeps
}

// sourcePuts returns how many PUT source requests reached the upstream.
func (o *outsideWriter) sourcePuts() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.puts
}

// sourceBody is the body of Fava's PUT source.
type sourceBody struct {
	FilePath string `json:"file_path"`
	Source   string `json:"source"`
	SHA256   string `json:"sha256sum"`
}
