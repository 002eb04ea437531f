package proxy

import (
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/ledger"
)

// cakeEntry is what a third client inserts above the entries the others
// edit.
const cakeEntry = "2024-01-15 * \"Bakery\" \"Cake\"\n  Expenses:Food   5.00 USD\n  Assets:Bank\n\n"

// insertAbove puts cakeEntry before the Bread entry: through the proxy's
// PUT source (Fava reloads, the old hashes become unknown) or, with
// outside, straight into the file (Fava does not reload, the old hashes
// resolve to the wrong lines).
func (e *emuEnv) insertAbove(outside bool) {
	e.tb.Helper()
	if outside {
		text := e.read()
		writeText(e.tb, e.main, strings.Replace(text, "2024-02-01 *", cakeEntry+"2024-02-01 *", 1))
		return
	}
	text, sum := e.getSource(e.main)
	resp, m := e.call(http.MethodPut, "source", nil, sourceBody{FilePath: e.main,
		Source: strings.Replace(text, "2024-02-01 *", cakeEntry+"2024-02-01 *", 1), SHA256: sum})
	e.wantSuccess("insert above", resp, m)
}

// TestSliceEditsSurviveShift: two clients edit different entries through
// source_slice after a third added lines above them; both edits land,
// answered as Fava answers them.
func TestSliceEditsSurviveShift(t *testing.T) {
	for _, style := range emuStyles {
		for _, how := range []string{"ThroughFava", "OutsideWriter"} {
			t.Run(style+"/"+how, func(t *testing.T) {
				e := startEmu(t, style, emuOpts{})
				bread := e.findEntry("2024-02-01 *")
				eggs := e.findEntry("2024-02-03 *")
				e.insertAbove(how == "OutsideWriter")

				newBread := strings.Replace(bread.slice, `"Bread"`, `"Rye bread"`, 1)
				var wg sync.WaitGroup
				var putResp, delResp *http.Response
				var putBody, delBody map[string]any
				wg.Go(func() {
					putResp, putBody = e.call(http.MethodPut, "source_slice", nil,
						map[string]any{"entry_hash": bread.hash, "source": newBread, "sha256sum": bread.sum})
				})
				wg.Go(func() {
					delResp, delBody = e.call(http.MethodDelete, "source_slice",
						url.Values{"entry_hash": {eggs.hash}, "sha256sum": {eggs.sum}}, nil)
				})
				wg.Wait()
				e.wantSuccess("PUT source_slice", putResp, putBody)
				e.wantSuccess("DELETE source_slice", delResp, delBody)
				if got, want := putBody["data"], checksum.String(newBread); got != want {
					t.Fatalf("PUT data=%v, want the new slice's checksum %s", got, want)
				}
				if got, want := delBody["data"], "Deleted entry "+eggs.hash+"."; got != want {
					t.Fatalf("DELETE data=%v, want %q", got, want)
				}
				file := e.read()
				for _, want := range []string{`"Rye bread"`, `"Cake"`, `"Milk"`} {
					if !strings.Contains(file, want) {
						t.Fatalf("file lacks %s:\n%s", want, file)
					}
				}
				if strings.Contains(file, `"Eggs"`) || strings.Contains(file, `"Bread"`) {
					t.Fatalf("file still holds an edited entry:\n%s", file)
				}
			})
		}
	}
}

// TestSliceFastPath: an edit whose hash is current goes to Fava as it is.
func TestSliceFastPath(t *testing.T) {
	e := startEmu(t, emuStyles[2], emuOpts{})
	milk := e.findEntry("2024-02-02 *")
	newMilk := strings.Replace(milk.slice, `"Milk"`, `"Whole milk"`, 1)
	resp, m := e.call(http.MethodPut, "source_slice", nil, map[string]any{"entry_hash": milk.hash, "source": newMilk, "sha256sum": milk.sum})
	e.wantSuccess("PUT", resp, m)
	if got := resp.Header.Get(ledger.RelocatedHeader); got != "" {
		t.Fatalf("%s=%q on a forwarded edit", ledger.RelocatedHeader, got)
	}
	if !strings.Contains(e.read(), `"Whole milk"`) {
		t.Fatalf("edit missing:\n%s", e.read())
	}
}

// TestSliceConflicts: an entry that changed (no block has the slice the
// client saw) or that has twins (several blocks have it) is answered 409
// of kind slice, and the file is left alone.
func TestSliceConflicts(t *testing.T) {
	for _, style := range emuStyles {
		t.Run(style+"/Changed", func(t *testing.T) {
			e := startEmu(t, style, emuOpts{})
			milk := e.findEntry("2024-02-02 *")
			// Someone else edits the entry; it no longer has the
			// client's slice.
			writeText(t, e.main, strings.Replace(e.read(), "1.00 USD", "1.20 USD", 1))
			before := e.read()
			resp, m := e.call(http.MethodDelete, "source_slice", url.Values{"entry_hash": {milk.hash}, "sha256sum": {milk.sum}}, nil)
			e.wantConflict("DELETE", resp, m, "slice")
			if got := e.read(); got != before {
				t.Fatalf("file changed:\n%s", got)
			}
		})
		t.Run(style+"/Twins", func(t *testing.T) {
			e := startEmu(t, style, emuOpts{})
			milk := e.findEntry("2024-02-02 *")
			text := e.read()
			twin := milk.slice + "\n\n"
			writeText(t, e.main, cakeEntry+strings.Replace(text, "2024-02-03 *", twin+"2024-02-03 *", 1))
			before := e.read()
			resp, m := e.call(http.MethodPut, "source_slice", nil, map[string]any{"entry_hash": milk.hash, "source": "x", "sha256sum": milk.sum})
			c := e.wantConflict("PUT", resp, m, "slice")
			if got, want := c["current_sha256sum"], milk.sum; got != want {
				t.Fatalf("current_sha256sum=%v, want %s", got, want)
			}
			if got := e.read(); got != before {
				t.Fatalf("file changed:\n%s", got)
			}
		})
	}
}

// TestSliceRelocatedKeepsCRLF: a relocated edit of a file with CRLF
// newlines leaves the file in CRLF, as Fava's own slice edit would.
func TestSliceRelocatedKeepsCRLF(t *testing.T) {
	main := t.TempDir() + "/main.beancount"
	writeText(t, main, strings.ReplaceAll(conflictLedger, "\n", "\r\n"))
	e := startEmu(t, emuStyles[1], emuOpts{main: main})
	milk := e.findEntry("2024-02-02 *")
	e.insertAbove(false)
	resp, m := e.call(http.MethodPut, "source_slice", nil, map[string]any{"entry_hash": milk.hash,
		"source": strings.Replace(milk.slice, `"Milk"`, `"Buttermilk"`, 1), "sha256sum": milk.sum})
	e.wantSuccess("PUT", resp, m)
	raw, err := os.ReadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), "\"Buttermilk\"\r\n") || strings.Count(string(raw), "\n") != strings.Count(string(raw), "\r\n") {
		t.Fatalf("file lost its CRLF newlines: %q", raw)
	}
}

// TestSliceAppliedAfterReset: Fava carries out a slice edit but the
// connection breaks before its answer; the file holds the new slice and
// not the old one, so the answer is the success Fava would have sent.
func TestSliceAppliedAfterReset(t *testing.T) {
	for _, style := range emuStyles {
		t.Run(style, func(t *testing.T) {
			e := startEmu(t, style, emuOpts{upstream: resetAfterWrite})
			milk := e.findEntry("2024-02-02 *")
			newMilk := strings.Replace(milk.slice, `"Milk"`, `"Kefir"`, 1)
			resp, m := e.call(http.MethodPut, "source_slice", nil, map[string]any{"entry_hash": milk.hash, "source": newMilk, "sha256sum": milk.sum})
			e.wantSuccess("PUT", resp, m)
			if got, want := m["data"], checksum.String(newMilk); got != want {
				t.Fatalf("data=%v, want %s", got, want)
			}
			if !strings.Contains(e.read(), `"Kefir"`) {
				t.Fatalf("edit missing:\n%s", e.read())
			}
		})
	}
}
