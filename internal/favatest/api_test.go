package favatest

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/checksum"
)

// errStatus is the status each style answers a Fava error with.
func errStatus(style string, status130 int) int {
	if style == Style127 {
		return http.StatusOK
	}
	return status130
}

// checkError asserts an API error answer: status, keys and message.
func checkError(t *testing.T, style string, r reply, status130 int, msg string) {
	t.Helper()
	if got, want := r.status, errStatus(style, status130); got != want {
		t.Fatalf("status=%d, want %d: %s", got, want, r.raw)
	}
	wantKeys := "error"
	if style == Style127 {
		wantKeys = "error,success"
		if got := r.body["success"]; got != false {
			t.Fatalf("success=%v, want false", got)
		}
	}
	if got := keys(r.body); got != wantKeys {
		t.Fatalf("keys=%s, want %s", got, wantKeys)
	}
	if got := r.body["error"]; got != msg {
		t.Fatalf("error=%q, want %q", got, msg)
	}
}

// checkOK asserts a success answer and returns its data.
func checkOK(t *testing.T, style string, r reply) any {
	t.Helper()
	if got, want := r.status, http.StatusOK; got != want {
		t.Fatalf("status=%d, want %d: %s", got, want, r.raw)
	}
	wantKeys := "data,mtime"
	if style == Style127 {
		wantKeys = "data,mtime,success"
		if got := r.body["success"]; got != true {
			t.Fatalf("success=%v, want true", got)
		}
	}
	if got := keys(r.body); got != wantKeys {
		t.Fatalf("keys=%s, want %s: %s", got, wantKeys, r.raw)
	}
	return r.body["data"]
}

// hashAt returns the entry_hash of the entry at lineno of file, as the
// journal endpoint reports it.
func (e *emu) hashAt(file string, lineno int) string {
	e.tb.Helper()
	data := e.api(http.MethodGet, "journal", nil, nil).body["data"].([]any)
	for _, x := range data {
		m := x.(map[string]any)
		meta := m["meta"].(map[string]any)
		if meta["filename"] == file && int(meta["lineno"].(float64)) == lineno {
			return m["entry_hash"].(string)
		}
	}
	e.tb.Fatalf("no entry at %s:%d", file, lineno)
	return ""
}

func forStyles(t *testing.T, f func(t *testing.T, style string)) {
	for _, st := range allStyles {
		t.Run(st, func(t *testing.T) { f(t, st) })
	}
}

func TestChanged(t *testing.T) {
	forStyles(t, func(t *testing.T, st string) {
		e := newEmu(t, Options{Style: st}, baseLedger)
		if got := checkOK(t, st, e.api(http.MethodGet, "changed", nil, nil)); got != false {
			t.Fatalf("changed=%v before any change", got)
		}
		writeFile(t, e.main, baseLedger+"\n2024-03-01 * \"x\"\n  Assets:Bank  1 USD\n  Equity:Opening\n")
		r := e.api(http.MethodGet, "changed", nil, nil)
		if got := checkOK(t, st, r); got != true {
			t.Fatalf("changed=%v after a change", got)
		}
		fi, _ := os.Stat(e.main)
		if got, want := r.body["mtime"], fmt.Sprint(fi.ModTime().UnixNano()); got != want {
			t.Fatalf("mtime=%v, want the file's %s", got, want)
		}
	})
}

func TestSource(t *testing.T) {
	forStyles(t, func(t *testing.T, st string) {
		e := newEmu(t, Options{Style: st}, baseLedger)
		data := checkOK(t, st, e.api(http.MethodGet, "source", url.Values{"filename": {""}}, nil)).(map[string]any)
		if got, want := keys(data), "file_path,sha256sum,source"; got != want {
			t.Fatalf("keys=%s, want %s", got, want)
		}
		if got, want := data["file_path"], e.main; got != want {
			t.Fatalf("file_path=%v, want %s", got, want)
		}
		sum := data["sha256sum"].(string)

		t.Run("ChangedExternally", func(t *testing.T) {
			r := e.api(http.MethodPut, "source", nil, map[string]any{"file_path": e.main, "source": "x", "sha256sum": "0000"})
			checkError(t, st, r, http.StatusInternalServerError, fmt.Sprintf("The file at '%s' changed externally.", e.main))
			if got := readFile(t, e.main); got != baseLedger {
				t.Fatalf("file changed by a refused write:\n%s", got)
			}
		})
		t.Run("NonSourceFile", func(t *testing.T) {
			other := filepath.Join(e.dir, "other.beancount")
			writeFile(t, other, "")
			r := e.api(http.MethodGet, "source", url.Values{"filename": {other}}, nil)
			checkError(t, st, r, http.StatusInternalServerError, fmt.Sprintf("Trying to read a non-source file at '%s'", other))
			r = e.api(http.MethodPut, "source", nil, map[string]any{"file_path": other, "source": "x", "sha256sum": sum})
			checkError(t, st, r, http.StatusInternalServerError, fmt.Sprintf("Trying to read a non-source file at '%s'", other))
		})
		t.Run("MissingParameter", func(t *testing.T) {
			r := e.api(http.MethodPut, "source", nil, map[string]any{"file_path": e.main, "source": "x"})
			checkError(t, st, r, http.StatusBadRequest, "Invalid API request: Parameter `sha256sum` is missing.")
		})
		t.Run("Written", func(t *testing.T) {
			text := baseLedger + "\n; edited\n"
			r := e.api(http.MethodPut, "source", nil, map[string]any{"file_path": e.main, "source": text, "sha256sum": sum})
			if got, want := checkOK(t, st, r), checksum.String(text); got != want {
				t.Fatalf("data=%v, want %s", got, want)
			}
			if got := readFile(t, e.main); got != text {
				t.Fatalf("file:\n%s\nwant:\n%s", got, text)
			}
		})
	})
}

func TestInvalidJSONBody(t *testing.T) {
	forStyles(t, func(t *testing.T, st string) {
		e := newEmu(t, Options{Style: st}, baseLedger)
		r := e.api(http.MethodPut, "add_entries", nil, "not json")
		switch st {
		case Style1308, Style13015:
			checkError(t, st, r, http.StatusBadRequest, "Invalid API request: Invalid JSON body.")
		default:
			checkError(t, st, r, http.StatusInternalServerError, "Invalid JSON request.")
		}
	})
}

func TestAddEntriesErrors(t *testing.T) {
	forStyles(t, func(t *testing.T, st string) {
		e := newEmu(t, Options{Style: st}, baseLedger)
		txn := func(mod func(m map[string]any)) map[string]any {
			m := map[string]any{"t": "Transaction", "date": "2024-03-01", "flag": "*", "payee": "", "narration": "n",
				"tags": []any{}, "links": []any{}, "meta": map[string]any{},
				"postings": []any{map[string]any{"account": "Assets:Bank", "amount": "1 USD"}, map[string]any{"account": "Equity:Opening", "amount": ""}}}
			mod(m)
			return m
		}
		cases := []struct {
			name   string
			body   any
			status int
			msg    string
		}{
			{"Unsupported", map[string]any{"entries": []any{map[string]any{"t": "Open", "date": "2024-03-01", "meta": map[string]any{}}}}, 500, "Unsupported entry type."},
			{"KeyError", map[string]any{"entries": []any{txn(func(m map[string]any) { delete(m, "narration") })}}, 500, "KeyError: 'narration'"},
			{"InvalidAmount", map[string]any{"entries": []any{txn(func(m map[string]any) {
				m["postings"] = []any{map[string]any{"account": "Assets:Bank", "amount": "1 usd"}}
			})}}, 500, "Invalid amount: 1 usd"},
			{"InvalidDate", map[string]any{"entries": []any{txn(func(m map[string]any) { m["date"] = "soon" })}}, 500, "Invalid entry date."},
			{"Missing", map[string]any{}, 400, "Invalid API request: Parameter `entries` is missing."},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				checkError(t, st, e.api(http.MethodPut, "add_entries", nil, c.body), c.status, c.msg)
			})
		}
		t.Run("WrongType", func(t *testing.T) {
			r := e.api(http.MethodPut, "add_entries", nil, map[string]any{"entries": "x"})
			msg := "Invalid API request: Parameter `entries` of incorrect type - expected <class 'list'>."
			if st == Style127 {
				msg = "Invalid API request: Parameter `entries` of incorrect type."
			}
			checkError(t, st, r, http.StatusBadRequest, msg)
		})
		if got := readFile(t, e.main); got != baseLedger {
			t.Fatalf("refused entries changed the file:\n%s", got)
		}
	})
}

// TestWriteReplyCarriesPreWriteMtime pins that a write's mtime is the value
// from before the write, so it cannot confirm the write.
func TestWriteReplyCarriesPreWriteMtime(t *testing.T) {
	forStyles(t, func(t *testing.T, st string) {
		e := newEmu(t, Options{Style: st}, baseLedger)
		before := checkOK(t, st, e.api(http.MethodGet, "changed", nil, nil))
		_ = before
		r0 := e.api(http.MethodGet, "errors", nil, nil)
		r := e.api(http.MethodPut, "add_entries", nil, map[string]any{"entries": exampleEntries[1:2]})
		checkOK(t, st, r)
		if got, want := r.body["mtime"], r0.body["mtime"]; got != want {
			t.Fatalf("write mtime=%v, want the pre-write %v", got, want)
		}
		fi, _ := os.Stat(e.main)
		if fmt.Sprint(fi.ModTime().UnixNano()) == r.body["mtime"] {
			t.Fatal("write reply carries the post-write mtime")
		}
		after := e.api(http.MethodGet, "changed", nil, nil)
		if got := checkOK(t, st, after); got != true {
			t.Fatalf("changed=%v after a write, want true", got)
		}
		if got, want := after.body["mtime"], fmt.Sprint(fi.ModTime().UnixNano()); got != want {
			t.Fatalf("mtime after changed=%v, want %s", got, want)
		}
	})
}

func TestContextAndStaleHash(t *testing.T) {
	forStyles(t, func(t *testing.T, st string) {
		e := newEmu(t, Options{Style: st}, baseLedger)
		h := e.hashAt(e.main, 12) // the "Milk" transaction
		data := checkOK(t, st, e.api(http.MethodGet, "context", url.Values{"entry_hash": {h}}, nil)).(map[string]any)
		wantSlice := "2024-02-02 * \"Shop\" \"Milk\"\n  Expenses:Food   1.00 USD\n  Assets:Bank"
		if since1308(st) {
			if got, want := keys(data), "balances_after,balances_before,entry"; got != want {
				t.Fatalf("context keys=%s, want %s", got, want)
			}
			data = checkOK(t, st, e.api(http.MethodGet, "source_slice", url.Values{"entry_hash": {h}}, nil)).(map[string]any)
			if got, want := keys(data), "sha256sum,slice"; got != want {
				t.Fatalf("source_slice keys=%s, want %s", got, want)
			}
		} else {
			if got, want := keys(data), "balances_after,balances_before,entry,sha256sum,slice"; got != want {
				t.Fatalf("context keys=%s, want %s", got, want)
			}
			if r := e.api(http.MethodGet, "source_slice", url.Values{"entry_hash": {h}}, nil); r.status != http.StatusMethodNotAllowed {
				t.Fatalf("GET source_slice status=%d, want 405", r.status)
			}
		}
		if got := data["slice"]; got != wantSlice {
			t.Fatalf("slice=%q, want %q", got, wantSlice)
		}
		if got, want := data["sha256sum"], checksum.String(wantSlice); got != want {
			t.Fatalf("sha256sum=%v, want %s", got, want)
		}

		t.Run("UnknownHash", func(t *testing.T) {
			r := e.api(http.MethodGet, "context", url.Values{"entry_hash": {"nope"}}, nil)
			status := http.StatusInternalServerError
			if since1308(st) {
				status = http.StatusNotFound
			}
			checkError(t, st, r, status, `No entry found for hash "nope"`)
		})

		// An earlier entry grows by one line: the old hash is gone for good.
		h1 := e.hashAt(e.main, 8)
		s1 := "2024-02-01 * \"Shop\" \"Bread\" ^b-1\n  Expenses:Food   2.50 USD\n  Assets:Bank"
		r := e.api(http.MethodPut, "source_slice", nil, map[string]any{"entry_hash": h1, "sha256sum": checksum.String(s1),
			"source": "2024-02-01 * \"Shop\" \"Bread\" ^b-1\n  kind: \"rye\"\n  Expenses:Food   2.50 USD\n  Assets:Bank"})
		checkOK(t, st, r)
		checkOK(t, st, e.api(http.MethodGet, "changed", nil, nil))
		r = e.api(http.MethodGet, "context", url.Values{"entry_hash": {h}}, nil)
		status := http.StatusInternalServerError
		if since1308(st) {
			status = http.StatusNotFound
		}
		checkError(t, st, r, status, fmt.Sprintf(`No entry found for hash "%s"`, h))
		if got := e.hashAt(e.main, 13); got == h {
			t.Fatal("the shifted entry kept its hash")
		}
	})
}

func TestSourceSlice(t *testing.T) {
	forStyles(t, func(t *testing.T, st string) {
		e := newEmu(t, Options{Style: st}, baseLedger)
		h := e.hashAt(e.main, 8)
		old := "2024-02-01 * \"Shop\" \"Bread\" ^b-1\n  Expenses:Food   2.50 USD\n  Assets:Bank"
		t.Run("Conflict", func(t *testing.T) {
			r := e.api(http.MethodPut, "source_slice", nil, map[string]any{"entry_hash": h, "sha256sum": "bad", "source": "x"})
			checkError(t, st, r, http.StatusInternalServerError, fmt.Sprintf("The file at '%s' changed externally.", e.main))
		})
		// A slice edit with a hash that still resolves but whose lines
		// shifted underneath (no reload in between) reads the wrong lines.
		t.Run("ShiftedUnderneath", func(t *testing.T) {
			writeFile(t, e.main, "; a new first line\n"+baseLedger)
			r := e.api(http.MethodPut, "source_slice", nil, map[string]any{"entry_hash": h, "sha256sum": checksum.String(old), "source": "x"})
			checkError(t, st, r, http.StatusInternalServerError, fmt.Sprintf("The file at '%s' changed externally.", e.main))
			writeFile(t, e.main, baseLedger)
		})
		t.Run("Delete", func(t *testing.T) {
			q := url.Values{"entry_hash": {h}, "sha256sum": {checksum.String(old)}}
			r := e.api(http.MethodDelete, "source_slice", q, nil)
			if got, want := checkOK(t, st, r), fmt.Sprintf("Deleted entry %s.", h); got != want {
				t.Fatalf("data=%v, want %q", got, want)
			}
			want := strings.Replace(baseLedger, old+"\n\n", "", 1)
			if got := readFile(t, e.main); got != want {
				t.Fatalf("file:\n%s\nwant:\n%s", got, want)
			}
		})
	})
}

func TestAttachDocument(t *testing.T) {
	forStyles(t, func(t *testing.T, st string) {
		e := newEmu(t, Options{Style: st}, baseLedger)
		h := e.hashAt(e.main, 12)
		r := e.api(http.MethodPut, "attach_document", nil, map[string]any{"filename": "r.pdf", "entry_hash": h})
		if got, want := checkOK(t, st, r), "Attached 'r.pdf' to entry."; got != want {
			t.Fatalf("data=%v, want %q", got, want)
		}
		// attach_document reloads first, so the fresh hash works again.
		h = e.hashAt(e.main, 12)
		checkOK(t, st, e.api(http.MethodPut, "attach_document", nil, map[string]any{"filename": "s.pdf", "entry_hash": h}))
		want := strings.Replace(baseLedger, "\"Milk\"\n", "\"Milk\"\n  document-2: \"s.pdf\"\n  document: \"r.pdf\"\n", 1)
		if got := readFile(t, e.main); got != want {
			t.Fatalf("file:\n%s\nwant:\n%s", got, want)
		}
	})
}

const docsLedger = `option "title" "Docs"
option "documents" "docs"

2024-01-01 open Assets:Bank
2024-01-01 open Expenses:Food
`

func TestMoveAndDeleteDocument(t *testing.T) {
	forStyles(t, func(t *testing.T, st string) {
		e := newEmu(t, Options{Style: st}, docsLedger)
		src := filepath.Join(e.dir, "docs", "Assets", "Bank", "2024-01-05 statement.pdf")
		writeFile(t, src, "%PDF")
		q := url.Values{"account": {"Expenses:Food"}, "new_name": {"2024-01-05 receipt.pdf"}, "filename": {src}}
		method, wrong := http.MethodGet, http.MethodPut
		if since1308(st) {
			method, wrong = http.MethodPut, http.MethodGet
		}
		move := func() reply {
			if method == http.MethodPut {
				// PUT endpoints take their parameters from a JSON body.
				return e.api(method, "move", nil, map[string]any{"account": q.Get("account"), "new_name": q.Get("new_name"), "filename": q.Get("filename")})
			}
			return e.api(method, "move", q, nil)
		}
		if r := e.api(wrong, "move", q, nil); r.status != http.StatusMethodNotAllowed || !strings.HasPrefix(r.ctype, "text/html") {
			t.Fatalf("%s move: status=%d type=%s, want HTML 405", wrong, r.status, r.ctype)
		}
		dst := filepath.Join(e.dir, "docs", "Expenses", "Food", "2024-01-05 receipt.pdf")
		r := move()
		if got, want := checkOK(t, st, r), fmt.Sprintf("Moved %s to %s.", src, dst); got != want {
			t.Fatalf("data=%v, want %q", got, want)
		}
		if got := readFile(t, dst); got != "%PDF" {
			t.Fatalf("moved file holds %q", got)
		}
		checkError(t, st, move(), http.StatusUnprocessableEntity, fmt.Sprintf("Not a file: '%s'", src))

		r = e.api(http.MethodDelete, "document", url.Values{"filename": {dst}}, nil)
		if got, want := checkOK(t, st, r), fmt.Sprintf("Deleted %s.", dst); got != want {
			t.Fatalf("data=%v, want %q", got, want)
		}
		r = e.api(http.MethodDelete, "document", url.Values{"filename": {e.main}}, nil)
		msg := fmt.Sprintf("Not valid document or import file: '%s'.", e.main)
		if st == Style127 {
			msg = "No valid document or import file."
		}
		checkError(t, st, r, http.StatusBadRequest, msg)
	})
	t.Run("NoDocumentsFolder", func(t *testing.T) {
		forStyles(t, func(t *testing.T, st string) {
			e := newEmu(t, Options{Style: st}, baseLedger)
			m := http.MethodGet
			if since1308(st) {
				m = http.MethodPut
			}
			q := url.Values{"account": {"Assets:Bank"}, "new_name": {"x"}, "filename": {e.main}}
			r := e.api(m, "move", q, nil)
			if m == http.MethodPut {
				r = e.api(m, "move", nil, map[string]any{"account": "Assets:Bank", "new_name": "x", "filename": e.main})
			}
			checkError(t, st, r, http.StatusUnprocessableEntity, "You need to set a documents folder.")
		})
	})
}

func TestFormatSource(t *testing.T) {
	e := newEmu(t, Options{}, baseLedger)
	r := e.api(http.MethodPut, "format_source", nil, map[string]any{"source": "  Assets:Bank  1 USD"})
	want := "  Assets:Bank" + strings.Repeat(" ", 61-13-1-4) + "  1 USD\n"
	if got := checkOK(t, Style130, r); got != want {
		t.Fatalf("data=%q, want %q", got, want)
	}
	if got := readFile(t, e.main); got != baseLedger {
		t.Fatal("format_source wrote the file")
	}
}

// TestMoveChecksDocumentFrom13015: up to 1.30.14 move takes any file;
// from 1.30.15 only a document or import file (400 otherwise).
func TestMoveChecksDocumentFrom13015(t *testing.T) {
	forStyles(t, func(t *testing.T, st string) {
		e := newEmu(t, Options{Style: st}, docsLedger)
		src := filepath.Join(e.dir, "loose.pdf")
		writeFile(t, src, "%PDF")
		args := map[string]any{"account": "Expenses:Food", "new_name": "2024-01-05 loose.pdf", "filename": src}
		var r reply
		if since1308(st) {
			r = e.api(http.MethodPut, "move", nil, args)
		} else {
			q := url.Values{}
			for k, v := range args {
				q.Set(k, v.(string))
			}
			r = e.api(http.MethodGet, "move", q, nil)
		}
		if st == Style13015 {
			checkError(t, st, r, http.StatusBadRequest, fmt.Sprintf("Not valid document or import file: '%s'.", src))
			return
		}
		checkOK(t, st, r)
	})
}
