package fava

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"strings"
)

// Balances of accounts, read with Fava's query API.
//
// The query is Beancount's own: "SELECT account, sum(position) WHERE
// account ~ '…' GROUP BY account", one row per account with its inventory,
// pads, interpolated postings and every entry of every file included,
// whatever their dates. Fava serialises an inventory as its units per
// currency ({"USD": 90.00}), with numbers written exactly (simplejson
// writes a Decimal as its digits). The endpoint and the shape of its data
// differ by version:
//
//   - up to 1.28: GET query_result?query_string=Q; data is {"table": HTML,
//     "chart": [{"group": account, "balance": {currency: number}}]} (the
//     chart is there because the result is a string column and an
//     inventory column, which Fava can plot);
//   - from 1.29: GET query?query_string=Q; data is {"t": "table", "types":
//     [{"name", "dtype"}], "rows": [[account, {currency: number}]]}.

// QueryEndpoints returns the query endpoints to try for style, in order:
// a Style127 Fava may be 1.27 or 1.28 (query_result) or 1.29 (query).
func QueryEndpoints(style Style) []string {
	if style == Style127 {
		return []string{"query_result", "query"}
	}
	return []string{"query"}
}

// BalanceQuery returns the BQL query of the balances of the accounts and
// their sub-accounts. Account names (CheckAccount) hold letters, digits,
// '-' and ':', nothing a regular expression or a BQL string treats
// specially. Beancount matches ~ without regard to case, so the rows may
// name more accounts than asked: Balances.Of filters them.
func BalanceQuery(accounts []string) string {
	return "SELECT account, sum(position) WHERE account ~ '^(" +
		strings.Join(accounts, "|") + ")(:|$)' GROUP BY account"
}

// Balances are the units per currency of accounts, as a balance query
// returned them.
type Balances map[string]map[string]*big.Rat

// Of returns the units of currency in account and its sub-accounts.
func (b Balances) Of(account, currency string) *big.Rat {
	sum := new(big.Rat)
	for a, inv := range b {
		if a == account || strings.HasPrefix(a, account+":") {
			if n := inv[currency]; n != nil {
				sum.Add(sum, n)
			}
		}
	}
	return sum
}

// ParseBalances reads the data of a successful balance query (see
// BalanceQuery) in either shape.
func ParseBalances(data json.RawMessage) (Balances, error) {
	var v struct {
		T     string `json:"t"`
		Types []struct {
			Name  string `json:"name"`
			Dtype string `json:"dtype"`
		} `json:"types"`
		Rows  [][]json.RawMessage `json:"rows"`
		Chart *[]struct {
			Group   *string         `json:"group"`
			Balance json.RawMessage `json:"balance"`
		} `json:"chart"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("balance query: %w", err)
	}
	out := Balances{}
	add := func(account string, inv json.RawMessage) error {
		units, err := inventoryUnits(inv)
		if err != nil {
			return fmt.Errorf("balance query: account %s: %w", account, err)
		}
		if out[account] == nil {
			out[account] = map[string]*big.Rat{}
		}
		for c, n := range units {
			if prev := out[account][c]; prev != nil {
				n.Add(n, prev)
			}
			out[account][c] = n
		}
		return nil
	}
	switch {
	case v.T == "table":
		if len(v.Types) != 2 || v.Types[0].Dtype != "str" || v.Types[1].Dtype != "Inventory" {
			return nil, fmt.Errorf("balance query: unexpected columns %+v", v.Types)
		}
		for _, row := range v.Rows {
			var account string
			if len(row) != 2 || json.Unmarshal(row[0], &account) != nil {
				return nil, fmt.Errorf("balance query: unexpected row %s", row)
			}
			if err := add(account, row[1]); err != nil {
				return nil, err
			}
		}
	case v.Chart != nil:
		for _, g := range *v.Chart {
			if g.Group == nil {
				return nil, fmt.Errorf("balance query: chart group without an account")
			}
			if err := add(*g.Group, g.Balance); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("balance query: neither a table nor a chart in the answer")
	}
	return out, nil
}

// inventoryUnits reads an inventory Fava serialised as units per currency,
// its numbers exactly; null is empty.
func inventoryUnits(raw json.RawMessage) (map[string]*big.Rat, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]json.Number
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	out := make(map[string]*big.Rat, len(m))
	for c, n := range m {
		if why := CheckCurrency(c); why != "" {
			return nil, fmt.Errorf("inventory: %s", why)
		}
		r, ok := new(big.Rat).SetString(n.String())
		if !ok {
			return nil, fmt.Errorf("inventory: %s %s is not a number", n, c)
		}
		out[c] = r
	}
	return out, nil
}

// QueryNotFound reports whether a reply to a query says the endpoint does
// not exist in this Fava (HTML 404), so the next of QueryEndpoints is to
// be tried.
func QueryNotFound(r Reply) bool {
	return r.Outcome == UpstreamError && r.Status == http.StatusNotFound
}
