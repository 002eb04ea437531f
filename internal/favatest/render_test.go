package favatest

import (
	"net/http"
	"os"
	"testing"
)

// exampleEntries is the add_entries call of FAVA-API.md's rendering example.
var exampleEntries = []any{
	map[string]any{
		"t": "Transaction", "date": "2024-06-01", "flag": "!", "payee": `Shop "Q"`, "narration": "Groceries",
		"tags": []any{"food", "trip-2024"}, "links": []any{"inv-42", "ln-abc123"},
		"meta": map[string]any{"note": "paid cash", "receipt": "r-1"},
		"postings": []any{
			map[string]any{"account": "Expenses:Food", "amount": "12.5 USD", "meta": map[string]any{"item": "bread"}},
			map[string]any{"account": "Assets:Bank", "amount": "-11 EUR @ 1.136363 USD"},
			map[string]any{"account": "Equity:Opening", "amount": ""},
		},
	},
	map[string]any{
		"t": "Transaction", "date": "2024-06-02", "flag": "*", "payee": "", "narration": "no payee",
		"tags": []any{}, "links": []any{}, "meta": map[string]any{},
		"postings": []any{
			map[string]any{"account": "Expenses:Food", "amount": "3 USD"},
			map[string]any{"account": "Assets:Bank", "amount": ""},
		},
	},
	map[string]any{"t": "Balance", "date": "2024-06-03", "account": "Assets:Bank", "meta": map[string]any{},
		"amount": map[string]any{"number": "100.00", "currency": "USD"}},
	map[string]any{"t": "Note", "date": "2024-06-04", "account": "Assets:Bank", "meta": map[string]any{},
		"comment": `called the "bank"`},
}

func TestAddEntriesRendersLikeFava(t *testing.T) {
	want, err := os.ReadFile("testdata/render-example.beancount")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range allStyles {
		t.Run(st, func(t *testing.T) {
			head := "option \"title\" \"Render\"\n"
			e := newEmu(t, Options{Style: st}, head)
			r := e.api(http.MethodPut, "add_entries", nil, map[string]any{"entries": exampleEntries})
			if got, want := r.status, http.StatusOK; got != want {
				t.Fatalf("status=%d, want %d: %s", got, want, r.raw)
			}
			if got, want := r.body["data"], "Stored 4 entries."; got != want {
				t.Fatalf("data=%v, want %q", got, want)
			}
			if got, want := readFile(t, e.main), head+"\n"+string(want); got != want {
				t.Fatalf("ledger:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}
