package proxy

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/internal/favatest"
)

// TestMoveReadsWhatFavaReads pins a bypass: PUT move (Fava ≥ 1.30.8) reads
// its arguments from the JSON body, but favaproxy checked the query
// string, so a harmless query plus a body naming a file outside the
// documents folder passed, and a legitimate body-only move was refused.
func TestMoveReadsWhatFavaReads(t *testing.T) {
	e := startEmu(t, favatest.Style1308, emuOpts{main: docsLedgerFile(t)})
	dir := filepath.Dir(e.main)
	src := filepath.Join(dir, "docs", "Assets", "Bank", "2024-01-05 statement.pdf")
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		t.Fatal(err)
	}
	writeText(t, src, "%PDF")
	secret := filepath.Join(dir, "secret.txt") // outside the documents folder
	writeText(t, secret, "secret")
	harmless := map[string][]string{"account": {"Expenses:Food"}, "new_name": {"x.pdf"}, "filename": {src}}
	outside := map[string]any{"account": "Expenses:Food", "new_name": "2024-01-05 secret", "filename": secret}
	resp, m := e.call(http.MethodPut, "move", harmless, outside)
	if resp.StatusCode != http.StatusBadRequest || m["field"] != "filename" {
		t.Fatalf("body naming a file outside the documents folder: status=%d %v, want 400 on filename", resp.StatusCode, m)
	}
	if _, err := os.Stat(secret); err != nil {
		t.Fatal("the file outside was moved")
	}
	inside := map[string]any{"account": "Expenses:Food", "new_name": "2024-01-05 receipt.pdf", "filename": src}
	resp, m = e.call(http.MethodPut, "move", nil, inside)
	e.wantSuccess("body-only move", resp, m)
}

// docsLedgerFile writes a ledger with a documents folder and returns its
// path.
func docsLedgerFile(tb testing.TB) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "main.beancount")
	writeText(tb, p, conflictLedger+"option \"documents\" \"docs\"\n2024-01-01 open Expenses:Food:Extra\n")
	return p
}

// TestSourceBodyReadAsFavaReadsIt pins bypasses of PUT source's file
// check: a body with an empty sha256sum skipped it, and FILE_PATH (Go's
// decoder matches names case-insensitively) overrode file_path while Fava
// reads exact names. Now a file_path is always checked, member names are
// exact and a repeated member is refused.
func TestSourceBodyReadAsFavaReadsIt(t *testing.T) {
	e := startEmu(t, favatest.Style130, emuOpts{})
	for _, tc := range []struct {
		name, body string
		want       int
	}{
		{"EmptyChecksum", `{"file_path":"/etc/passwd","source":"x","sha256sum":""}`, http.StatusBadRequest},
		{"Repeated", `{"file_path":"` + e.main + `","file_path":"/etc/passwd","source":"x","sha256sum":"00"}`, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, http.MethodPut, e.api("source", nil), tc.body, http.Header{"Content-Type": {"application/json"}})
			if resp.StatusCode != tc.want {
				t.Fatalf("status=%d, want %d; %s", resp.StatusCode, tc.want, body)
			}
		})
	}
	// FILE_PATH is not file_path to Fava: the request names no file, and
	// the audit must not name /etc/passwd.
	text, sum := e.getSource(e.main)
	body := `{"FILE_PATH":"/etc/passwd","file_path":"` + e.main + `","source":` + string(mustJSON(t, text+"\n; ok\n")) + `,"sha256sum":"` + sum + `"}`
	resp, b := do(t, http.MethodPut, e.api("source", nil), body, http.Header{"Content-Type": {"application/json"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(e.read(), "; ok") {
		t.Fatalf("exact file_path beside FILE_PATH: status=%d %s", resp.StatusCode, b)
	}
}

// TestQueriesFavaReadsDifferentlyRefused: a query string Go's parser and
// werkzeug's read differently (";" separators, bad "%" escapes) is
// refused where favaproxy checks parameters, instead of checking one
// reading while Fava acts on the other.
func TestQueriesFavaReadsDifferentlyRefused(t *testing.T) {
	e := startEmu(t, favatest.Style130, emuOpts{main: docsLedgerFile(t)})
	for _, q := range []string{"filename=/etc/passwd;filename=x", "filename=%zz"} {
		for _, m := range []string{http.MethodDelete} {
			resp, body := do(t, m, e.api("document", nil)+"?"+q, "", nil)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "query") {
				t.Errorf("%s document?%s: status=%d %s, want 400 naming the query", m, q, resp.StatusCode, body)
			}
		}
		resp, body := do(t, http.MethodGet, e.api("source", nil)+"?"+q, "", nil)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "query") {
			t.Errorf("GET source?%s: status=%d %s, want 400 naming the query", q, resp.StatusCode, body)
		}
	}
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
