package favatest

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// insertLedger includes txns.beancount, which holds an insert-entry option
// for Expenses:Food: Fava inserts matching entries before that option, in
// that file.
const insertLedger = `option "title" "Insert"
option "operating_currency" "USD"

2024-01-01 open Assets:Bank
2024-01-01 open Expenses:Food
2024-01-01 open Expenses:Rent

include "txns.beancount"
`

const insertTxns = `2024-02-01 * "Shop" "Bread"
  Expenses:Food   2.50 USD
  Assets:Bank

2024-01-01 custom "fava-option" "insert_entry" "Expenses:Fo"

2024-02-02 * "Landlord" "Rent"
  Expenses:Rent   500.00 USD
  Assets:Bank
`

func txnEntry(date, narration, account string) map[string]any {
	return map[string]any{
		"t": "Transaction", "date": date, "flag": "*", "payee": "", "narration": narration,
		"tags": []any{}, "links": []any{}, "meta": map[string]any{},
		"postings": []any{
			map[string]any{"account": account, "amount": "3.00 USD"},
			map[string]any{"account": "Assets:Bank", "amount": ""},
		},
	}
}

// TestInsertEntryOption pins Fava's fava-option "insert-entry" (spelled
// here insert_entry, which Fava reads the same): an entry
// dated after the option with an account the pattern matches at its start
// (a transaction's postings looked at last first) is inserted before the
// option, in the option's file; any other entry is appended to the main
// file; an entry dated on or before the option's date is not placed by it.
func TestInsertEntryOption(t *testing.T) {
	for _, style := range []string{Style127, Style130, Style1308} {
		t.Run(style, func(t *testing.T) {
			e := newEmu(t, Options{Style: style}, insertLedger)
			txns := filepath.Join(e.dir, "txns.beancount")
			writeFile(t, txns, insertTxns)
			reloadLater(t, e)
			r := e.api(http.MethodPut, "add_entries", nil, map[string]any{"entries": []any{
				txnEntry("2024-03-01", "Apples", "Expenses:Food"),
				txnEntry("2024-03-02", "Flat", "Expenses:Rent"),
				txnEntry("2024-01-01", "Early", "Expenses:Food"),
			}})
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			wantTxns := `2024-02-01 * "Shop" "Bread"
  Expenses:Food   2.50 USD
  Assets:Bank

2024-03-01 * "Apples"
  Expenses:Food                                        3.00 USD
  Assets:Bank

2024-01-01 custom "fava-option" "insert_entry" "Expenses:Fo"

2024-02-02 * "Landlord" "Rent"
  Expenses:Rent   500.00 USD
  Assets:Bank
`
			if got := readFile(t, txns); got != wantTxns {
				t.Errorf("txns.beancount:\n%s\nwant:\n%s", got, wantTxns)
			}
			wantMain := insertLedger + `
2024-01-01 * "Early"
  Expenses:Food                                        3.00 USD
  Assets:Bank

2024-03-02 * "Flat"
  Expenses:Rent                                        3.00 USD
  Assets:Bank
`
			if got := readFile(t, e.main); got != wantMain {
				t.Errorf("main.beancount:\n%s\nwant:\n%s", got, wantMain)
			}
			if _, err := exec.LookPath("bean-check"); err == nil {
				if out, err := exec.Command("bean-check", e.main).CombinedOutput(); err != nil {
					t.Errorf("bean-check: %v\n%s", err, out)
				}
			}
		})
	}
}

// TestDefaultFileOption pins fava-option "default-file": ignored up to
// 1.29 (entries go to the main file); from 1.30 entries no insert-entry
// option places go to the file it names (from 1.30.8 relative to the
// option's file; empty: the option's own file).
func TestDefaultFileOption(t *testing.T) {
	for _, tc := range []struct {
		style, want string
	}{
		{Style127, "main.beancount"},
		{Style130, "txns.beancount"},
		{Style1308, "txns.beancount"},
	} {
		t.Run(tc.style, func(t *testing.T) {
			e := newEmu(t, Options{Style: tc.style}, insertLedger)
			txns := filepath.Join(e.dir, "txns.beancount")
			writeFile(t, txns, "2024-01-01 custom \"fava-option\" \"default-file\"\n")
			reloadLater(t, e)
			r := e.api(http.MethodPut, "add_entries", nil, map[string]any{"entries": []any{
				txnEntry("2024-03-02", "Flat", "Expenses:Rent"),
			}})
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			target := filepath.Join(e.dir, tc.want)
			if got := readFile(t, target); !strings.Contains(got, `"Flat"`) {
				t.Errorf("%s does not hold the entry:\n%s", tc.want, got)
			}
		})
	}
}

// reloadLater moves the main file's time forward, so that the emulator
// reloads the ledger (and reads the include written after it started).
func reloadLater(tb testing.TB, e *emu) {
	tb.Helper()
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(e.main, later, later); err != nil {
		tb.Fatal(err)
	}
}
