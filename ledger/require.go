package ledger

import (
	"context"
	"fmt"
	"math/big"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/journal"
)

// Balance requirements: add_entries conditional on account balances.
//
// A request states conditions on balances after its write in the header
// Favaproxy-Require, a comma-separated list (several header lines are
// joined):
//
//	Favaproxy-Require: Assets:Wallet:Alice >= 0 USD, Expenses:Food <= 500 EUR
//
// Each condition is ACCOUNT OP NUMBER CURRENCY, OP one of >= > <= < = !=.
// The balance of an account is Beancount's: the units of the currency held
// by the account and its sub-accounts, over every entry of every file
// (pads and interpolated postings included), whatever their dates.
//
// Under the ledger lock, after every check of the request's key and
// If-Match, favaproxy forces Fava to reload (GET changed), asks it for the
// balances with one query (fava.BalanceQuery), adds the units the
// request's postings move, and writes only if every condition holds.
// Otherwise nothing is written and the answer is 409 with the balances
// seen. A write with requirements is batched alone: the writes of others
// could change its outcome.
//
// What cannot be computed exactly is refused with 400 before any lock: a
// posting on a named account whose units Beancount would have to
// interpolate from postings that carry a cost or a price (or from more than
// one posting without an amount, or that Beancount would round to the
// precision of the others, to the ledger's own tolerance options or to
// the precision of an expression), or whose number is not a decimal
// Beancount holds exactly (1/3). Under the lock, checkPads refuses alike a
// write whose effect a pad of the ledger would change.

// RequireHeader is the header of balance requirements.
const RequireHeader = "Favaproxy-Require"

// maxRequirements bounds the conditions of one request.
const maxRequirements = 16

// Requirement is one condition on a balance after a write.
type Requirement struct {
	// Text is the condition as the client wrote it, trimmed.
	Text     string
	Account  string
	Op       string
	Number   *big.Rat
	Currency string
}

// requirementRe is one condition: ACCOUNT OP NUMBER CURRENCY. Numbers
// have no thousands separators: commas separate conditions.
var requirementRe = regexp.MustCompile(`^([A-Za-z0-9][^\s<>=!]*)\s*(>=|<=|!=|=|>|<)\s*([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))\s+(\S+)$`)

// ParseRequirements reads the balance requirements of a write's header:
// nil when there are none.
func ParseRequirements(h http.Header) ([]Requirement, error) {
	vs, ok := h[RequireHeader]
	if !ok {
		return nil, nil
	}
	var out []Requirement
	for _, part := range strings.Split(strings.Join(vs, ","), ",") {
		text := strings.TrimSpace(part)
		if text == "" {
			continue
		}
		if len(out) == maxRequirements {
			return nil, favaproxy.FieldErrorf(RequireHeader, "more than %d conditions", maxRequirements)
		}
		m := requirementRe.FindStringSubmatch(text)
		if m == nil {
			return nil, favaproxy.FieldErrorf(RequireHeader,
				"%q is not a condition ACCOUNT OP NUMBER CURRENCY (OP one of >= > <= < = !=; no thousands separators)", short(text))
		}
		if why := fava.CheckCurrency(m[4]); why != "" {
			return nil, favaproxy.FieldErrorf(RequireHeader, "%q: %s", short(text), why)
		}
		n, ok := new(big.Rat).SetString(m[3])
		if !ok || !fava.Decimal(n) {
			return nil, favaproxy.FieldErrorf(RequireHeader, "%q: %s is not a number Beancount holds exactly", short(text), m[3])
		}
		out = append(out, Requirement{Text: text, Account: m[1], Op: m[2], Number: n, Currency: m[4]})
	}
	if out == nil {
		return nil, favaproxy.FieldErrorf(RequireHeader, "no condition")
	}
	return out, nil
}

// short cuts s for an error message.
func short(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// holds reports whether balance satisfies the condition.
func (r Requirement) holds(balance *big.Rat) bool {
	c := balance.Cmp(r.Number)
	switch r.Op {
	case ">=":
		return c >= 0
	case ">":
		return c > 0
	case "<=":
		return c <= 0
	case "<":
		return c < 0
	case "=":
		return c == 0
	default: // "!="
		return c != 0
	}
}

// covers reports whether account is the requirement's account or one of
// its sub-accounts.
func (r Requirement) covers(account string) bool {
	return account == r.Account || strings.HasPrefix(account, r.Account+":")
}

// requirementDeltas checks the requirements of an add_entries request
// against the ledger's roots and returns, for each, the units of its
// currency that the entries move into its account: an error (400) when
// that cannot be computed exactly.
func requirementDeltas(reqs []Requirement, entries []fava.Entry, roots []string, tolerance bool) ([]*big.Rat, error) {
	for _, r := range reqs {
		if why := fava.CheckAccount(r.Account, roots); why != "" && !isRoot(r.Account, roots) {
			return nil, favaproxy.FieldErrorf(RequireHeader, "%q: %s", short(r.Text), why)
		}
	}
	deltas := make([]*big.Rat, len(reqs))
	for i := range deltas {
		deltas[i] = new(big.Rat)
	}
	for ei, e := range entries {
		if e.Type != fava.TypeTransaction {
			continue // Balance and Note entries move nothing
		}
		units, err := transactionUnits(e, tolerance)
		if err != nil {
			return nil, favaproxy.FieldErrorf(fmt.Sprintf("entries[%d]", ei), "%v", err)
		}
		for pi, p := range e.Postings {
			for ri, r := range reqs {
				if !r.covers(p.Account) {
					continue
				}
				u := units[pi]
				if u == nil {
					return nil, favaproxy.FieldErrorf(fmt.Sprintf("entries[%d].postings[%d]", ei, pi),
						"the units of %s cannot be computed exactly for the condition %q: give its amount", p.Account, short(r.Text))
				}
				if n := u[r.Currency]; n != nil {
					deltas[ri].Add(deltas[ri], n)
				}
			}
		}
	}
	return deltas, nil
}

func isRoot(account string, roots []string) bool {
	if len(roots) == 0 {
		roots = fava.DefaultRoots
	}
	return slices.Contains(roots, account)
}

// transactionUnits returns the units each posting of a transaction moves,
// per currency, as Beancount books them: nil for a posting whose units
// cannot be computed exactly here. A posting without an amount is
// interpolated as Beancount does when it is the only one, no posting
// carries a cost or a price, and Beancount's rounding of the result to the
// precision of the other postings (its inferred tolerance) leaves it as it
// is: it takes the opposite of the others' sum.
func transactionUnits(e fava.Entry, tolerance bool) ([]map[string]*big.Rat, error) {
	out := make([]map[string]*big.Rat, len(e.Postings))
	missing, missingUnits := -1, fava.Units{}
	simple := !tolerance // every complete posting's weight is its units
	residual := map[string]*big.Rat{}
	places := map[string]int{} // the fewest places of a number written with some
	exprs := map[string]bool{} // currencies with an expression, of unknown places
	for i, p := range e.Postings {
		u, err := fava.PostingUnits(p.Amount)
		if err != nil {
			return nil, fmt.Errorf("postings[%d]: %v", i, err)
		}
		if u.Cost || u.Price {
			simple = false
		}
		if !u.Complete() {
			if missing >= 0 {
				simple = false
			}
			missing, missingUnits = i, u
			continue
		}
		if !fava.Decimal(u.Number) {
			simple = false
			continue // left nil: Beancount rounds it
		}
		out[i] = map[string]*big.Rat{u.Currency: u.Number}
		if prev := residual[u.Currency]; prev != nil {
			residual[u.Currency] = new(big.Rat).Add(prev, u.Number)
		} else {
			residual[u.Currency] = new(big.Rat).Set(u.Number)
		}
		if u.Places < 0 {
			exprs[u.Currency] = true
		}
		if p, seen := places[u.Currency]; u.Places > 0 && (!seen || u.Places < p) {
			places[u.Currency] = u.Places
		}
	}
	if missing < 0 || !simple {
		return out, nil
	}
	u := missingUnits
	if u.Number != nil {
		return out, nil // a currency to infer: left nil
	}
	m := map[string]*big.Rat{}
	for c, n := range residual {
		if n.Sign() == 0 || u.Currency != "" && u.Currency != c {
			continue
		}
		if exprs[c] {
			return out, nil // Beancount's rounding goes by places not known here
		}
		if rp, _ := fava.DecimalPlaces(n); rp > 0 && (places[c] == 0 || rp > places[c]) {
			return out, nil // Beancount would round it
		}
		m[c] = new(big.Rat).Neg(n)
	}
	out[missing] = m
	return out, nil
}

// requirementResult is what a condition met under the lock.
type requirementResult struct {
	Condition string `json:"condition"`
	// Balance is the balance before the write, After with the write.
	Balance string `json:"balance"`
	After   string `json:"after"`
	Holds   bool   `json:"holds"`
}

// checkRequirements evaluates ar's requirements under the ledger lock:
// nil when every one holds, else the 409 answer with what each saw.
func (l *Ledger) checkRequirements(ctx context.Context, ar *addRequest) (*Response, error) {
	reqs := ar.req.Require
	accounts := make([]string, 0, len(reqs))
	for _, r := range reqs {
		if !slices.Contains(accounts, r.Account) {
			accounts = append(accounts, r.Account)
		}
	}
	if err := l.checkPads(reqs, ar.typed); err != nil {
		return nil, err
	}
	bal, err := l.queryBalances(ctx, accounts)
	if err != nil {
		return nil, err
	}
	results := make([]requirementResult, len(reqs))
	ok := true
	for i, r := range reqs {
		before := bal.Of(r.Account, r.Currency)
		after := new(big.Rat).Add(before, ar.deltas[i])
		results[i] = requirementResult{
			Condition: r.Text,
			Balance:   fava.FormatDecimal(before) + " " + r.Currency,
			After:     fava.FormatDecimal(after) + " " + r.Currency,
			Holds:     r.holds(after),
		}
		ok = ok && results[i].Holds
	}
	if ok {
		return nil, nil
	}
	var failed []string
	for _, res := range results {
		if !res.Holds {
			failed = append(failed, fmt.Sprintf("%s (would be %s)", res.Condition, res.After))
		}
	}
	status, body := fava.RefusalReply(l.styleOf(), http.StatusConflict,
		"nothing was written: a balance requirement would not hold: "+strings.Join(failed, "; "), "requirements", results)
	return &Response{Status: status, Header: jsonHeader(), Body: body, Refused: "requirement_failed"}, nil
}

// queryBalances has Fava reload the ledger and returns the balances of
// accounts and their sub-accounts.
func (l *Ledger) queryBalances(ctx context.Context, accounts []string) (fava.Balances, error) {
	cctx, cancel := context.WithTimeout(ctx, l.all.Timeouts.Upstream)
	defer cancel()
	get := func(name string, q map[string][]string) (*fava.Response, error) {
		return l.client.Do(cctx, &fava.Request{Kind: favaproxy.KindRead, Method: http.MethodGet,
			URL: l.apiURL(name, q), Header: http.Header{}})
	}
	resp, err := get("changed", nil)
	if err != nil {
		return nil, fmt.Errorf("reload before balance query: %w", err)
	}
	l.noteStyle(resp.Reply.Style)
	// Fava's watcher (watchfiles, from 1.29 on) reports a change made by
	// others (a rollback put back, an importer under favaproxy lock) only
	// after a debounce: until its mtime reaches the files', Fava answers
	// from the ledger as it was.
	newest := l.newestMtime()
	wait := time.NewTimer(favaCatchUp)
	defer wait.Stop()
	for {
		// An mtime that cannot be read tells nothing: the query goes on.
		if seen, perr := strconv.ParseInt(resp.Reply.Mtime, 10, 64); perr != nil || seen >= newest {
			break
		}
		select {
		case <-wait.C:
			return nil, favaproxy.WithRetryAfter(fmt.Errorf("reload before balance query: %w", favaproxy.Errorf(favaproxy.EUnavailable,
				"fava has not seen the latest change to the ledger's files after %v; nothing was written; retry", favaCatchUp)), 1)
		case <-cctx.Done():
			return nil, fmt.Errorf("reload before balance query: %w", cctx.Err())
		case <-time.After(favaCatchUpPoll):
		}
		if resp, err = get("changed", nil); err != nil {
			return nil, fmt.Errorf("reload before balance query: %w", err)
		}
	}
	q := fava.BalanceQuery(accounts)
	for _, name := range fava.QueryEndpoints(l.styleOf()) {
		resp, err = get(name, map[string][]string{"query_string": {q}})
		if err != nil {
			return nil, fmt.Errorf("balance query: %w", err)
		}
		if fava.QueryNotFound(resp.Reply) {
			continue
		}
		if resp.Reply.Outcome != fava.Success {
			return nil, fmt.Errorf("balance query: %w", favaproxy.Errorf(favaproxy.EUpstream,
				"fava did not answer the balance query: %s", resp.Reply.Message))
		}
		return fava.ParseBalances(resp.Reply.Data)
	}
	return nil, fmt.Errorf("balance query: %w", favaproxy.Errorf(favaproxy.EUpstream, "fava has no query endpoint"))
}

// How long a balance query waits for Fava's watcher to see the ledger's
// latest change (watchfiles reports changes within its 1.6 s debounce),
// and how often it asks.
const (
	favaCatchUp     = 3 * time.Second
	favaCatchUpPoll = 50 * time.Millisecond
)

// newestMtime is the latest modification time, in nanoseconds, of the
// ledger's files as the index last read them.
func (l *Ledger) newestMtime() int64 {
	var newest int64
	for _, p := range l.index.Ledger().Files {
		if f, ok := l.index.File(p); ok {
			newest = max(newest, f.ModTime.UnixNano())
		}
	}
	return newest
}

// refusedRecord is the journal record of a conditional write refused
// under the lock: the answer a retry of its key replays.
func refusedRecord(resp *Response, before snapshot, note string) journal.Record {
	return journal.Record{Outcome: journal.OutcomeRefused, Status: resp.Status, Reply: resp.Body,
		Files: before.changes(before, ""), Note: note}
}

// ledgerPad is a pad directive of the ledger: Beancount inserts on its
// date the units that make account's balance meet the first balance
// assertion on account after it (limit, "" when there is none yet), taken
// from source.
type ledgerPad struct {
	date, account, source, limit string
}

// checkPads refuses (400) a write whose effect on a required balance a pad
// of the ledger would change, so that favaproxy cannot compute it from the
// postings: a posting on the padded account (or a sub-account) dated before
// the assertion the pad is for changes the pad's amount by as much, moving
// it between the padded and the source account, and a new balance
// assertion on a padded account can set a pad's amount. It reads the index
// as refreshed under the ledger lock.
func (l *Ledger) checkPads(reqs []Requirement, entries []fava.Entry) error {
	var pads []ledgerPad
	type assertion struct{ date, account string }
	var balances []assertion
	for _, f := range l.index.Ledger().Files {
		for _, b := range l.index.Blocks(f) {
			switch {
			case b.Kind == beancount.KindPad && len(b.Accounts) == 2:
				pads = append(pads, ledgerPad{date: b.Date, account: b.Accounts[0], source: b.Accounts[1]})
			case b.Kind == beancount.KindBalance && len(b.Accounts) == 1:
				balances = append(balances, assertion{b.Date, b.Accounts[0]})
			}
		}
	}
	for _, p := range pads {
		var req *Requirement
		for i, r := range reqs {
			if r.covers(p.account) || r.covers(p.source) {
				req = &reqs[i]
				break
			}
		}
		if req == nil {
			continue
		}
		for _, b := range balances {
			if b.account == p.account && b.date > p.date && (p.limit == "" || b.date < p.limit) {
				p.limit = b.date
			}
		}
		under := func(account string) bool {
			return account == p.account || strings.HasPrefix(account, p.account+":")
		}
		for ei, e := range entries {
			switch e.Type {
			case fava.TypeBalance:
				if under(e.Account) {
					return favaproxy.FieldErrorf(fmt.Sprintf("entries[%d]", ei),
						"a balance assertion on %s, which the ledger pads (pad of %s), can change the pad's amount: the condition %q cannot be computed ahead",
						e.Account, p.date, short(req.Text))
				}
			case fava.TypeTransaction:
				for pi, po := range e.Postings {
					if under(po.Account) && p.limit != "" && e.Date < p.limit {
						return favaproxy.FieldErrorf(fmt.Sprintf("entries[%d].postings[%d]", ei, pi),
							"dated before the balance assertion of %s on %s, which the pad of %s fills from %s: the pad would absorb it, so the condition %q cannot be computed ahead",
							p.account, p.limit, p.date, p.source, short(req.Text))
					}
				}
			}
		}
	}
	return nil
}
