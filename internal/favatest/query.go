package favatest

import (
	"encoding/json"
	"html"
	"math/big"
	"net/http"
	"regexp"
	"sort"
	"strings"

	"github.com/favaproxy/favaproxy/fava"
)

// The query API, for the one query shape favaproxy sends (balances by
// account): "SELECT account, sum(position) [WHERE account ~ 'RE'] GROUP BY
// account". Like Fava, it answers from the ledger as last loaded (a
// client forces a reload with GET changed first). The emulator's
// inventories hold units only: Beancount's booking of lots at cost and its
// pad directives are not emulated, and a transaction whose one posting
// without an amount is balanced by postings with a cost or price cannot be
// summed (the query then fails as an uncaught error would).
//
// Fava 1.27 and 1.28 answer query_result with an HTML table and, for a
// result it can plot (a string column and an inventory column), a chart
// holding the same numbers; from 1.29, query answers the serialised table.

var balanceQueryRe = regexp.MustCompile(`(?i)^\s*SELECT\s+account\s*,\s*sum\(\s*position\s*\)\s+(?:WHERE\s+account\s*~\s*'([^']*)'\s+)?GROUP\s+BY\s+account\s*;?\s*$`)

// balanceRows runs the balance query q on the ledger as last loaded: one
// row per account whose postings match, in account order, with its units
// per currency (zeros dropped, as Fava's SimpleCounterInventory does).
func balanceRows(l *ledger, q string) ([]string, []map[string]*big.Rat, error) {
	m := balanceQueryRe.FindStringSubmatch(q)
	if m == nil {
		return nil, nil, plainError("the emulator answers only SELECT account, sum(position) [WHERE account ~ '…'] GROUP BY account")
	}
	var re *regexp.Regexp
	if m[1] != "" {
		var err error
		if re, err = regexp.Compile("(?i)" + m[1]); err != nil {
			return nil, nil, plainError("Invalid regular expression: " + err.Error())
		}
	}
	sums := map[string]map[string]*big.Rat{}
	for _, e := range l.snapshot().entries {
		if e.kind != "Transaction" {
			continue
		}
		units, ok := postingUnits(e.postings)
		if !ok {
			return nil, nil, &uncaughtError{"cannot book " + e.date + " " + e.narration}
		}
		for i, p := range e.postings {
			if re != nil && !re.MatchString(p.Account) {
				continue
			}
			if sums[p.Account] == nil {
				sums[p.Account] = map[string]*big.Rat{}
			}
			for c, n := range units[i] {
				if sums[p.Account][c] == nil {
					sums[p.Account][c] = new(big.Rat)
				}
				sums[p.Account][c].Add(sums[p.Account][c], n)
			}
		}
	}
	accounts := make([]string, 0, len(sums))
	for a := range sums {
		accounts = append(accounts, a)
	}
	sort.Strings(accounts)
	rows := make([]map[string]*big.Rat, len(accounts))
	for i, a := range accounts {
		rows[i] = sums[a]
		for c, n := range rows[i] {
			if n.Sign() == 0 {
				delete(rows[i], c)
			}
		}
	}
	return accounts, rows, nil
}

// postingUnits returns the units of each posting, interpolating the one
// without an amount from the others' units; false when the transaction
// needs booking the emulator does not do.
func postingUnits(ps []posting) ([]map[string]*big.Rat, bool) {
	out := make([]map[string]*big.Rat, len(ps))
	missing, annotated := -1, false
	residual := map[string]*big.Rat{}
	for i, p := range ps {
		u, err := fava.PostingUnits(p.Amount)
		if err != nil {
			return nil, false
		}
		annotated = annotated || u.Cost || u.Price
		if !u.Complete() {
			if missing >= 0 || u.Number != nil {
				return nil, false
			}
			missing = i
			continue
		}
		out[i] = map[string]*big.Rat{u.Currency: u.Number}
		if residual[u.Currency] == nil {
			residual[u.Currency] = new(big.Rat)
		}
		residual[u.Currency].Add(residual[u.Currency], u.Number)
	}
	if missing >= 0 {
		if annotated {
			return nil, false
		}
		out[missing] = map[string]*big.Rat{}
		for c, n := range residual {
			out[missing][c] = new(big.Rat).Neg(n)
		}
	}
	return out, true
}

// inventoryJSON is an inventory as Fava serialises it: currency to an
// exact decimal number.
func inventoryJSON(inv map[string]*big.Rat) map[string]json.Number {
	out := make(map[string]json.Number, len(inv))
	for c, n := range inv {
		out[c] = json.Number(fava.FormatDecimal(n))
	}
	return out
}

// apiQuery is GET query (≥ 1.29): the serialised table.
func apiQuery(s *Server, l *ledger, r *http.Request, args map[string]any) (any, error) {
	q, _ := args["query_string"].(string)
	accounts, rows, err := balanceRows(l, q)
	if err != nil {
		return nil, err
	}
	out := make([][]any, len(accounts))
	for i, a := range accounts {
		out[i] = []any{a, inventoryJSON(rows[i])}
	}
	return map[string]any{
		"t": "table",
		"types": []map[string]string{
			{"name": "account", "dtype": "str"},
			{"name": "sum_position", "dtype": "Inventory"},
		},
		"rows": out,
	}, nil
}

// apiQueryResult is GET query_result (≤ 1.28): an HTML table and a chart.
func apiQueryResult(s *Server, l *ledger, r *http.Request, args map[string]any) (any, error) {
	q, _ := args["query_string"].(string)
	accounts, rows, err := balanceRows(l, q)
	if err != nil {
		return nil, err
	}
	var table strings.Builder
	table.WriteString(`<table is="sortable-table" class="queryresults"><thead><tr><th data-sort="string">account</th><th data-sort="num">sum_position</th></tr></thead><tbody>`)
	chart := make([]map[string]any, len(accounts))
	for i, a := range accounts {
		table.WriteString("<tr><td>" + html.EscapeString(a) + `</td><td class="num">`)
		cs := make([]string, 0, len(rows[i]))
		for c := range rows[i] {
			cs = append(cs, c)
		}
		sort.Strings(cs)
		for _, c := range cs {
			table.WriteString(fava.FormatDecimal(rows[i][c]) + " " + c + "<br>")
		}
		table.WriteString("</td></tr>")
		chart[i] = map[string]any{"group": a, "balance": inventoryJSON(rows[i])}
	}
	table.WriteString("</tbody></table>")
	return map[string]any{"table": table.String(), "chart": chart}, nil
}
