package ledger

import (
	"slices"
	"testing"
)

// TestLedgerRoots pins the one rule add_entries and add_account share for a
// ledger's root account names.
func TestLedgerRoots(t *testing.T) {
	custom := []string{"Aktiva", "Passiva", "Eigenkapital", "Ertrag", "Aufwand"}
	for _, tc := range []struct {
		name string
		opts map[string][]string
		want []string
	}{
		{"NoneSet", map[string][]string{"title": {"x"}}, nil},
		{"AllSet", map[string][]string{"name_assets": {"Aktiva"}, "name_liabilities": {"Passiva"},
			"name_equity": {"Eigenkapital"}, "name_income": {"Ertrag"}, "name_expenses": {"Aufwand"}}, custom},
		{"LastWins", map[string][]string{"name_assets": {"Vermoegen", "Aktiva"}},
			[]string{"Aktiva", "Liabilities", "Equity", "Income", "Expenses"}},
		{"EmptyIgnored", map[string][]string{"name_assets": {""}, "name_income": {"Ertrag"}},
			[]string{"Assets", "Liabilities", "Equity", "Ertrag", "Expenses"}},
		{"InvalidMeansDefaults", map[string][]string{"name_assets": {"assets lower"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ledgerRoots(tc.opts); !slices.Equal(got, tc.want) {
				t.Errorf("ledgerRoots=%q, want %q", got, tc.want)
			}
		})
	}
}
