package favatest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

var allStyles = []string{Style127, Style130, Style1308, Style13015}

const baseLedger = `option "title" "Test Ledger"
option "operating_currency" "USD"

2024-01-01 open Assets:Bank
2024-01-01 open Expenses:Food
2024-01-01 open Equity:Opening

2024-02-01 * "Shop" "Bread" ^b-1
  Expenses:Food   2.50 USD
  Assets:Bank

2024-02-02 * "Shop" "Milk"
  Expenses:Food   1.00 USD
  Assets:Bank
`

// emu is a Server on real files behind an httptest server.
type emu struct {
	tb   testing.TB
	srv  *Server
	http *httptest.Server
	dir  string
	main string
	slug string
}

func writeFile(tb testing.TB, path, text string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		tb.Fatal(err)
	}
}

func readFile(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func newEmu(tb testing.TB, opts Options, text string) *emu {
	tb.Helper()
	dir := tb.TempDir()
	main := filepath.Join(dir, "main.beancount")
	writeFile(tb, main, text)
	if opts.ReloadCostPerTxn == 0 {
		opts.ReloadCostPerTxn = -1
	}
	srv, err := New(opts, main)
	if err != nil {
		tb.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	tb.Cleanup(func() { hs.Close(); srv.Close() })
	return &emu{tb: tb, srv: srv, http: hs, dir: dir, main: main, slug: srv.Slugs()[0]}
}

// reply is an API answer.
type reply struct {
	status int
	ctype  string
	raw    string
	body   map[string]any
}

func (e *emu) do(method, path string, body any) reply {
	e.tb.Helper()
	var rd io.Reader
	if body != nil {
		switch b := body.(type) {
		case string:
			rd = strings.NewReader(b)
		default:
			j, err := json.Marshal(b)
			if err != nil {
				e.tb.Fatal(err)
			}
			rd = bytes.NewReader(j)
		}
	}
	req, err := http.NewRequest(method, e.http.URL+path, rd)
	if err != nil {
		e.tb.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		e.tb.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := reply{status: res.StatusCode, ctype: res.Header.Get("Content-Type"), raw: string(raw)}
	if strings.HasPrefix(r.ctype, "application/json") {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			e.tb.Fatalf("%s %s: bad JSON %q: %v", method, path, raw, err)
		}
	}
	return r
}

func (e *emu) api(method, name string, query url.Values, body any) reply {
	e.tb.Helper()
	p := "/" + e.slug + "/api/" + name
	if query != nil {
		p += "?" + query.Encode()
	}
	return e.do(method, p, body)
}

// keys returns the sorted keys of a JSON object.
func keys(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

// since1308 reports whether style st is Fava 1.30.8 or later.
func since1308(st string) bool { return st == Style1308 || st == Style13015 }
