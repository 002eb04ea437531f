package favatest

import (
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/internal/setcheck"
)

const queryLedger = baseLedger + `include "more.beancount"

2024-02-03 * "Exchange"
  Assets:Bank        -11.00 USD
  Assets:Bank:Euro    10.00 EUR @ 1.10 USD
`

const queryInclude = `2024-01-01 open Assets:Bank:Euro
2024-01-01 open Assets:Cash
2024-03-01 * "ATM"
  Assets:Cash     40.00 USD
  Assets:Cash      5.00 EUR
  Assets:Bank
`

// queryEndpoint is the name of the query endpoint of style st.
func queryEndpoint(st string) string {
	if st == Style127 {
		return "query_result"
	}
	return "query"
}

// TestQueryBalancesMatchBeanQuery: the emulator's balance query, read by
// favaproxy's parser in every style, gives the balances bean-query gives
// for the same files (includes and interpolated postings).
func TestQueryBalancesMatchBeanQuery(t *testing.T) {
	if _, err := exec.LookPath("bean-query"); err != nil {
		t.Skip("bean-query not installed (Debian package beancount)")
	}
	for _, st := range allStyles {
		t.Run(st, func(t *testing.T) {
			e := newEmu(t, Options{Style: st}, baseLedger)
			writeFile(t, filepath.Join(e.dir, "more.beancount"), queryInclude)
			writeFile(t, e.main, queryLedger) // loaded by GET changed
			e.api(http.MethodGet, "changed", nil, nil)
			q := fava.BalanceQuery([]string{"Assets", "Expenses:Food"})
			r := e.api(http.MethodGet, queryEndpoint(st), url.Values{"query_string": {q}}, nil)
			if r.status != http.StatusOK {
				t.Fatalf("query: %d %s", r.status, r.raw)
			}
			reply := fava.Classify(r.status, http.Header{"Content-Type": {r.ctype}}, []byte(r.raw))
			if reply.Outcome != fava.Success {
				t.Fatalf("query reply %v: %s", reply.Outcome, r.raw)
			}
			got, err := fava.ParseBalances(reply.Data)
			if err != nil {
				t.Fatal(err)
			}
			want, err := setcheck.BeanQueryBalances(e.main)
			if err != nil {
				t.Fatal(err)
			}
			for account, inv := range want {
				asked := account == "Expenses:Food" || strings.HasPrefix(account, "Assets:")
				for c, n := range inv {
					g := got[account][c]
					switch {
					case !asked && got[account] != nil:
						t.Errorf("%s: not asked for, answered %v", account, got[account])
					case asked && n.Sign() != 0 && (g == nil || g.Cmp(n) != 0):
						t.Errorf("%s %s: emulator %v, bean-query %s", account, c, g, n.FloatString(2))
					}
				}
			}
			// Sub-accounts are summed into their parent.
			bank := new(big.Rat)
			for account, inv := range want {
				if account == "Assets:Bank" || strings.HasPrefix(account, "Assets:Bank:") {
					if n := inv["USD"]; n != nil {
						bank.Add(bank, n)
					}
				}
			}
			if g := got.Of("Assets:Bank", "USD"); g.Cmp(bank) != 0 {
				t.Errorf("Assets:Bank USD with sub-accounts: emulator %s, bean-query %s", g.FloatString(2), bank.FloatString(2))
			}
			if st == Style127 {
				var data struct{ Table string }
				_ = json.Unmarshal(reply.Data, &data)
				if !strings.Contains(data.Table, "<table") {
					t.Errorf("query_result without its HTML table: %s", r.raw)
				}
			}
		})
	}
}
