package ledger

import (
	"math/big"
	"net/http"
	"testing"

	"github.com/favaproxy/favaproxy/fava"
)

func TestParseRequirements(t *testing.T) {
	h := http.Header{RequireHeader: {"Assets:Wallet>=0 USD, Expenses:Food <= 500.50 EUR", "Assets != -3 USD"}}
	got, err := ParseRequirements(h)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ account, op, num, cur string }{
		{"Assets:Wallet", ">=", "0", "USD"}, {"Expenses:Food", "<=", "500.5", "EUR"}, {"Assets", "!=", "-3", "USD"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d requirements, want %d", len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		n, _ := new(big.Rat).SetString(w.num)
		if g.Account != w.account || g.Op != w.op || g.Number.Cmp(n) != 0 || g.Currency != w.cur {
			t.Errorf("requirement %d = %+v, want %+v", i, g, w)
		}
	}
	if r, err := ParseRequirements(http.Header{}); r != nil || err != nil {
		t.Errorf("no header: %v, %v", r, err)
	}
	for _, bad := range []string{"Assets:Wallet >= 1,000 USD", "Assets:Wallet => 0 USD", "Assets:Wallet >= 0 USD EUR", ">= 0 USD"} {
		if _, err := ParseRequirements(http.Header{RequireHeader: {bad}}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestTransactionUnits: a posting without an amount takes the opposite of
// the others' sum only where Beancount would give exactly that.
func TestTransactionUnits(t *testing.T) {
	p := func(account, amount string) fava.Posting { return fava.Posting{Account: account, Amount: amount} }
	for _, tc := range []struct {
		name     string
		postings []fava.Posting
		// want is the interpolated posting's USD units, "" for none.
		want string
	}{
		{"Simple", []fava.Posting{p("Assets:A", "-10 USD"), p("Expenses:B", "")}, "10"},
		{"SamePlaces", []fava.Posting{p("Assets:A", "-10.25 USD"), p("Assets:C", "-1.50 USD"), p("Expenses:B", "")}, "11.75"},
		{"IntegerAndDecimal", []fava.Posting{p("Assets:A", "-10 USD"), p("Assets:C", "-2.5 USD"), p("Expenses:B", "")}, "12.5"},
		// Beancount rounds 11.125 to the precision of 1.5 (one place).
		{"Rounded", []fava.Posting{p("Assets:A", "-9.625 USD"), p("Assets:C", "-1.5 USD"), p("Expenses:B", "")}, ""},
		{"Priced", []fava.Posting{p("Assets:A", "-10 USD"), p("Assets:C", "1 EUR @ 1 USD"), p("Expenses:B", "")}, ""},
		{"TwoMissing", []fava.Posting{p("Assets:A", "-10 USD"), p("Assets:C", ""), p("Expenses:B", "")}, ""},
		{"NoCurrency", []fava.Posting{p("Assets:A", "-10 USD"), p("Expenses:B", "10")}, ""},
		// Python's decimal makes 1.5+1.5 "3.0", one place: Beancount
		// rounds 3.35 to 3.4. The places of an expression are not
		// followed here, so nothing is interpolated.
		{"Expression", []fava.Posting{p("Expenses:F", "1.5+1.5 USD"), p("Expenses:F", "0.35 USD"), p("Assets:B", "")}, ""},
		{"SignedLiteral", []fava.Posting{p("Assets:A", "-10.25 USD"), p("Assets:C", "+1.50 USD"), p("Expenses:B", "")}, "8.75"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := fava.Entry{Type: fava.TypeTransaction, Postings: tc.postings}
			units, err := transactionUnits(e, false)
			if err != nil {
				t.Fatal(err)
			}
			last := units[len(units)-1]
			switch {
			case tc.want == "" && last != nil:
				t.Errorf("interpolated %v, want nothing", last)
			case tc.want != "":
				w, _ := new(big.Rat).SetString(tc.want)
				if last == nil || last["USD"] == nil || last["USD"].Cmp(w) != 0 {
					t.Errorf("interpolated %v, want %s USD", last, tc.want)
				}
			}
		})
	}
	// With inferred_tolerance_default, nothing is interpolated.
	e := fava.Entry{Type: fava.TypeTransaction, Postings: []fava.Posting{p("Assets:A", "-10 USD"), p("Expenses:B", "")}}
	if units, _ := transactionUnits(e, true); units[1] != nil {
		t.Errorf("interpolated %v under a default tolerance", units[1])
	}
}
