package proxy

import (
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/internal/setcheck"
	"github.com/favaproxy/favaproxy/ledger"
)

// walletLedger adds a wallet holding 100 USD to addLedger.
const walletLedger = `2024-01-01 open Assets:Wallet
2024-01-01 open Income:Salary

2024-01-02 * "Salary"
  Assets:Wallet    100 USD
  Income:Salary
`

// withdrawal takes 10 USD from the wallet.
func withdrawal(narration string) string {
	return fmt.Sprintf(`{"t":"Transaction","date":"2024-06-01","flag":"*","payee":"","narration":%q,"tags":[],"links":[],"meta":{},`+
		`"postings":[{"account":"Assets:Wallet","amount":"-10 USD"},{"account":"Expenses:Food","amount":""}]}`, narration)
}

// walletBalance is the wallet's USD balance as bean-query computes it.
func walletBalance(tb testing.TB, file string) *big.Rat {
	tb.Helper()
	if _, err := exec.LookPath("bean-query"); err != nil {
		tb.Skip("bean-query not installed (Debian package beancount)")
	}
	bal, err := setcheck.BeanQueryBalances(file)
	if err != nil {
		tb.Fatal(err)
	}
	if n := bal["Assets:Wallet"]["USD"]; n != nil {
		return n
	}
	return new(big.Rat)
}

// putRequire sends an add_entries request with the balance requirement
// require and the idempotency key key ("" for none).
func putRequire(tb testing.TB, url, key, require, body string) (*http.Response, string) {
	tb.Helper()
	h := http.Header{"Content-Type": {"application/json"}, "Authorization": {basicAuth("alice")}}
	if key != "" {
		h.Set("Idempotency-Key", key)
	}
	if require != "" {
		h.Set(ledger.RequireHeader, require)
	}
	return do(tb, http.MethodPut, url, body, h)
}

// TestRequireControl is the check-then-act race: 20 clients each withdraw
// 10 USD from a wallet holding 100 USD if the balance stays at or above 0.
// Straight to Fava, each reads the balance (Fava's query API), decides,
// and writes: all read before any writes, as happens under load, and the
// wallet goes negative. Through favaproxy, with the condition stated in
// Favaproxy-Require, exactly 10 are written, 10 get 409 with the balance
// they met, each conditional write is a call of its own, and bean-query
// finds the wallet at 0.
func TestRequireControl(t *testing.T) {
	const clients = 20
	for _, style := range styles {
		t.Run(style, func(t *testing.T) {
			control := newAddEnv(t, style, walletLedger)
			api := control.cfg.Upstream + "/" + testSlug + "/api/"
			var read, wrote sync.WaitGroup
			read.Add(clients)
			var mu sync.Mutex
			acked := 0
			for i := range clients {
				wrote.Add(1)
				go func() {
					defer wrote.Done()
					bal, err := directBalance(api, style)
					read.Done()
					read.Wait() // every client has read before any writes
					if err != nil {
						t.Error(err)
						return
					}
					if bal.Cmp(big.NewRat(10, 1)) < 0 {
						return
					}
					resp, _ := do(t, http.MethodPut, api+"add_entries", entriesBody(withdrawal(fmt.Sprintf("w-%d", i))),
						http.Header{"Content-Type": {"application/json"}})
					if resp.StatusCode == http.StatusOK {
						mu.Lock()
						acked++
						mu.Unlock()
					}
				}()
			}
			wrote.Wait()
			if got := walletBalance(t, control.file); got.Sign() >= 0 {
				t.Fatalf("control: wallet at %s after %d acknowledged withdrawals; the race did not show", got.FloatString(2), acked)
			} else {
				t.Logf("control: %d withdrawals acknowledged, wallet at %s USD", acked, got.FloatString(2))
			}

			e := newAddEnv(t, style, walletLedger)
			e.start(t, Options{})
			statuses := make([]int, clients)
			bodies := make([]string, clients)
			var wg sync.WaitGroup
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, body := putRequire(t, e.url, "", "Assets:Wallet >= 0 USD", entriesBody(withdrawal(fmt.Sprintf("w-%d", i))))
					statuses[i], bodies[i] = resp.StatusCode, body
				}()
			}
			wg.Wait()
			ok, refused := 0, 0
			for i, st := range statuses {
				switch st {
				case http.StatusOK:
					ok++
				case http.StatusConflict:
					refused++
					var m struct {
						Error        string
						Requirements []struct {
							Condition, Balance, After string
							Holds                     bool
						}
					}
					if err := json.Unmarshal([]byte(bodies[i]), &m); err != nil || m.Error == "" || len(m.Requirements) != 1 ||
						m.Requirements[0].Balance != "0 USD" || m.Requirements[0].After != "-10 USD" || m.Requirements[0].Holds {
						t.Errorf("409 body %s: want the error and the balance seen (0 USD, -10 USD after)", bodies[i])
					}
				default:
					t.Errorf("client %d: status %d: %s", i, st, bodies[i])
				}
			}
			if ok != 10 || refused != 10 {
				t.Errorf("%d written, %d refused; want 10 and 10", ok, refused)
			}
			if got := walletBalance(t, e.file); got.Sign() != 0 {
				t.Errorf("wallet at %s USD, want 0", got.FloatString(2))
			}
			if got := e.front.calls.Load(); got != int32(ok) {
				t.Errorf("%d add_entries calls to Fava for %d conditional writes: they were batched", got, ok)
			}
		})
	}
}

// directBalance reads the wallet's USD balance from Fava's query API as a
// client would (after GET changed).
func directBalance(api, style string) (*big.Rat, error) {
	if resp, err := http.Get(api + "changed"); err == nil {
		resp.Body.Close()
	}
	name := "query"
	if style == favatest.Style127 {
		name = "query_result"
	}
	resp, err := http.Get(api + name + "?" + url.Values{"query_string": {fava.BalanceQuery([]string{"Assets:Wallet"})}}.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return nil, err
	}
	reply := fava.Classify(resp.StatusCode, resp.Header, raw)
	bal, err := fava.ParseBalances(reply.Data)
	if err != nil {
		return nil, err
	}
	return bal.Of("Assets:Wallet", "USD"), nil
}

// TestRequireBad: conditions favaproxy cannot evaluate exactly, or that
// are not conditions, are refused with 400 naming the field, before
// anything is written.
func TestRequireBad(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, walletLedger)
	e.start(t, Options{})
	priced := `{"t":"Transaction","date":"2024-06-01","flag":"*","payee":"","narration":"fx","tags":[],"links":[],"meta":{},` +
		`"postings":[{"account":"Assets:Bank","amount":"-11 USD"},{"account":"Assets:Wallet","amount":""},{"account":"Expenses:Food","amount":"1 EUR @ 1 USD"}]}`
	third := `{"t":"Transaction","date":"2024-06-01","flag":"*","payee":"","narration":"third","tags":[],"links":[],"meta":{},` +
		`"postings":[{"account":"Assets:Wallet","amount":"-1/3 USD"},{"account":"Expenses:Food","amount":""}]}`
	for _, tc := range []struct {
		name, require, body, field string
	}{
		{"NotACondition", "Assets:Wallet is positive", withdrawal("x"), "Favaproxy-Require"},
		{"NoCurrency", "Assets:Wallet >= 0", withdrawal("x"), "Favaproxy-Require"},
		{"BadCurrency", "Assets:Wallet >= 0 usd", withdrawal("x"), "Favaproxy-Require"},
		{"BadRoot", "Wallet:Alice >= 0 USD", withdrawal("x"), "Favaproxy-Require"},
		{"Empty", " , ", withdrawal("x"), "Favaproxy-Require"},
		{"TooMany", strings.Repeat("Assets:Wallet >= 0 USD,", 17), withdrawal("x"), "Favaproxy-Require"},
		{"InterpolatedFromPrice", "Assets:Wallet >= 0 USD", priced, "entries[0].postings[1]"},
		{"Third", "Assets:Wallet >= 0 USD", third, "entries[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := putRequire(t, e.url, "", tc.require, entriesBody(tc.body))
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, tc.field) {
				t.Errorf("status %d, body %s; want 400 naming %s", resp.StatusCode, body, tc.field)
			}
		})
	}
	// Only add_entries takes requirements.
	h := http.Header{"Content-Type": {"application/json"}, ledger.RequireHeader: {"Assets:Wallet >= 0 USD"}}
	resp, body := do(t, http.MethodPut, strings.TrimSuffix(e.url, "add_entries")+"source", `{"file_path":"x","source":"","sha256sum":""}`, h)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, ledger.RequireHeader) {
		t.Errorf("source with a requirement: status %d, body %s; want 400 naming the header", resp.StatusCode, body)
	}
	if got := e.front.calls.Load(); got != 0 {
		t.Errorf("%d add_entries calls reached Fava", got)
	}
}

// TestRequireInterpolated: a condition on the account whose posting has
// no amount counts the amount Beancount interpolates for it; conditions on
// sub-accounts of a parent are summed; several conditions must all hold.
func TestRequireInterpolated(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, walletLedger)
	e.start(t, Options{})
	for _, tc := range []struct {
		require string
		want    int
	}{
		{"Expenses:Food <= 5 USD", http.StatusConflict}, // the withdrawal puts 10 there
		{"Expenses:Food = 10 USD", http.StatusOK},
		{"Assets >= 80 USD, Expenses:Food < 30 USD", http.StatusOK},        // Assets holds the wallet: 90, then 80
		{"Expenses:Food != 40 USD, Assets >= 80 USD", http.StatusConflict}, // the wallet would be at 70
	} {
		resp, body := putRequire(t, e.url, "", tc.require, entriesBody(withdrawal(tc.require)))
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d; %s", tc.require, resp.StatusCode, tc.want, body)
		}
	}
	if got := walletBalance(t, e.file); got.Cmp(big.NewRat(80, 1)) != 0 {
		t.Errorf("wallet at %s, want 80", got.FloatString(2))
	}
}

// TestRequireKeyedReplay: a refused conditional write retried with its key
// replays its refusal, even once the condition would hold; the written
// one replays its success.
func TestRequireKeyedReplay(t *testing.T) {
	for _, style := range styles {
		t.Run(style, func(t *testing.T) {
			e := newAddEnv(t, style, walletLedger)
			e.start(t, Options{})
			first, fbody := putRequire(t, e.url, "k-big", "Assets:Wallet >= 0 USD", entriesBody(strings.ReplaceAll(withdrawal("big"), "-10 USD", "-150 USD")))
			if first.StatusCode != http.StatusConflict {
				t.Fatalf("first: status %d; %s", first.StatusCode, fbody)
			}
			// A deposit makes the condition hold.
			resp, body := putEntries(t, e.url, "alice", "", entriesBody(strings.ReplaceAll(withdrawal("deposit"), "-10 USD", "100 USD")))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("deposit: %d %s", resp.StatusCode, body)
			}
			again, abody := putRequire(t, e.url, "k-big", "Assets:Wallet >= 0 USD", entriesBody(strings.ReplaceAll(withdrawal("big"), "-10 USD", "-150 USD")))
			if again.StatusCode != http.StatusConflict || again.Header.Get(ledger.ReplayedHeader) != "true" || abody != fbody {
				t.Fatalf("retry: status %d replayed=%q body %s; want the first answer %s", again.StatusCode, again.Header.Get(ledger.ReplayedHeader), abody, fbody)
			}
			ok, obody := putRequire(t, e.url, "k-big-2", "Assets:Wallet >= 0 USD", entriesBody(strings.ReplaceAll(withdrawal("big"), "-10 USD", "-150 USD")))
			if ok.StatusCode != http.StatusOK {
				t.Fatalf("new key: status %d; %s", ok.StatusCode, obody)
			}
			okAgain, _ := putRequire(t, e.url, "k-big-2", "Assets:Wallet >= 0 USD", entriesBody(strings.ReplaceAll(withdrawal("big"), "-10 USD", "-150 USD")))
			if okAgain.StatusCode != http.StatusOK || okAgain.Header.Get(ledger.ReplayedHeader) != "true" {
				t.Fatalf("retry of the written one: status %d replayed=%q", okAgain.StatusCode, okAgain.Header.Get(ledger.ReplayedHeader))
			}
			if got := walletBalance(t, e.file); got.Cmp(big.NewRat(50, 1)) != 0 {
				t.Errorf("wallet at %s, want 50 (100 + 100 - 150)", got.FloatString(2))
			}
		})
	}
}

// paddedLedger fills the wallet from Equity:Opening with a pad, up to the
// balance assertion of 2024-03-01.
const paddedLedger = `2024-01-01 open Assets:Wallet
2024-01-01 open Equity:Opening

2024-01-01 pad Assets:Wallet Equity:Opening

2024-03-01 balance Assets:Wallet 100 USD
`

// TestRequirePadded: a pad's amount is whatever makes the wallet meet the
// assertion after it, so a withdrawal dated before that assertion moves
// nothing out of the wallet (bean-query shows the pad absorbing it) and a
// condition on the wallet or on the pad's source cannot be computed from
// the postings: 400, nothing sent to Fava. A balance assertion on the
// padded wallet is refused alike; a withdrawal after the assertion is
// written.
func TestRequirePadded(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, paddedLedger)
	e.start(t, Options{})
	early := strings.ReplaceAll(withdrawal("early"), "2024-06-01", "2024-02-01")
	assertion := `{"t":"Balance","date":"2024-06-02","account":"Assets:Wallet","amount":{"number":"90","currency":"USD"},"meta":{}}`
	for _, tc := range []struct{ name, require, body, field string }{
		{"Backdated", "Assets:Wallet >= 95 USD", early, "entries[0].postings[0]"},
		{"BackdatedSource", "Equity >= -100 USD", early, "entries[0].postings[0]"},
		{"Assertion", "Assets >= 0 USD", assertion, "entries[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := putRequire(t, e.url, "", tc.require, entriesBody(tc.body))
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, tc.field) || !strings.Contains(body, "pad") {
				t.Errorf("status %d, body %s; want 400 naming %s and the pad", resp.StatusCode, body, tc.field)
			}
		})
	}
	if got := e.front.calls.Load(); got != 0 {
		t.Fatalf("%d add_entries calls reached Fava", got)
	}
	// Unpadded accounts and later dates are computed as usual.
	resp, body := putRequire(t, e.url, "", "Assets:Wallet <= 1000 USD, Expenses:Food <= 10 USD", entriesBody(withdrawal("late")))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("late withdrawal: status %d, body %s", resp.StatusCode, body)
	}
	// Why: written without a condition, the early withdrawal leaves the
	// wallet where it was; the pad takes 10 USD more from Equity:Opening.
	if resp, body := putEntries(t, e.url, "alice", "", entriesBody(early)); resp.StatusCode != http.StatusOK {
		t.Fatalf("early withdrawal: status %d, body %s", resp.StatusCode, body)
	}
	if got := walletBalance(t, e.file); got.Cmp(big.NewRat(90, 1)) != 0 {
		t.Errorf("bean-query: wallet at %s, want 90 (100 padded, -10 late; the early -10 absorbed)", got.FloatString(2))
	}
}

// TestRequireTolerance: with inferred_tolerance_multiplier set, Beancount
// rounds an interpolated amount to a coarser step (bean-query books 1.4 for
// 1.35 here), so a condition on that posting cannot be computed: 400.
func TestRequireTolerance(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "option \"inferred_tolerance_multiplier\" \"5\"\n"+walletLedger)
	e.start(t, Options{})
	body := entriesBody(strings.ReplaceAll(withdrawal("x"), `"amount":"-10 USD"},{"account":"Expenses:Food","amount":""}`,
		`"amount":""},{"account":"Expenses:Food","amount":"1.35 USD"}`))
	resp, b := putRequire(t, e.url, "", "Assets:Wallet >= 98.65 USD", body)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "entries[0].postings[0]") {
		t.Fatalf("status %d, body %s; want 400 naming the interpolated posting", resp.StatusCode, b)
	}
	if resp, b := putEntries(t, e.url, "alice", "", body); resp.StatusCode != http.StatusOK {
		t.Fatalf("without the condition: status %d, body %s", resp.StatusCode, b)
	}
	if got, want := walletBalance(t, e.file), big.NewRat(986, 10); got.Cmp(want) != 0 {
		t.Errorf("bean-query: wallet at %s, want 98.60 (the interpolated -1.35 booked as -1.4)", got.FloatString(2))
	}
}

// TestRequireKeyOtherConditions: a key is one request, conditions
// included: the same key and entries with another requirement or another
// If-Match is a different request (422), not a replay of the answer given
// under the first conditions.
func TestRequireKeyOtherConditions(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, walletLedger)
	e.start(t, Options{})
	body := entriesBody(strings.ReplaceAll(withdrawal("big"), "-10 USD", "-150 USD"))
	if resp, b := putRequire(t, e.url, "k-cond", "Assets:Wallet >= 0 USD", body); resp.StatusCode != http.StatusConflict {
		t.Fatalf("first: status %d; %s", resp.StatusCode, b)
	}
	if resp, b := putRequire(t, e.url, "k-cond", "Assets:Wallet >= -100 USD", body); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("other requirement: status %d, want 422; %s", resp.StatusCode, b)
	}
	if resp, b := putEntriesIf(t, e.url, "alice", "k-cond", `"v1-stale"`, body); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("If-Match instead: status %d, want 422; %s", resp.StatusCode, b)
	}
	if resp, b := putRequire(t, e.url, "k-cond", "Assets:Wallet >= 0 USD", body); resp.StatusCode != http.StatusConflict || resp.Header.Get(ledger.ReplayedHeader) != "true" {
		t.Errorf("same conditions: status %d replayed=%q, want the 409 replayed; %s", resp.StatusCode, resp.Header.Get(ledger.ReplayedHeader), b)
	}
	if got := walletBalance(t, e.file); got.Cmp(big.NewRat(100, 1)) != 0 {
		t.Errorf("wallet at %s, want 100", got.FloatString(2))
	}
}

// TestRequireWaitsForFavasWatcher: Fava's watchfiles watcher (1.29 on)
// reports a change made by another program only after a debounce. An
// importer (under the ledger lock, as `favaproxy lock` runs it) empties
// the wallet, and a conditional withdrawal follows at once: favaproxy
// waits until Fava's mtime has caught up with the files before it asks
// for the balance, so the withdrawal is refused and the wallet stays at 0
// (bean-query). Asked at once, Fava would still report 100 USD.
func TestRequireWaitsForFavasWatcher(t *testing.T) {
	const delay = time.Second
	e := newAddEnvOpts(t, favatest.Options{Style: favatest.Style130, ReloadCostPerTxn: -1, WatchDelay: delay}, walletLedger)
	e.start(t, Options{})
	api := strings.TrimSuffix(e.url, "add_entries")
	// Fava has loaded the ledger: the wallet holds 100 USD.
	direct := e.cfg.Upstream + "/" + testSlug + "/api/"
	if bal, err := directBalance(direct, favatest.Style130); err != nil || bal.Cmp(big.NewRat(100, 1)) != 0 {
		t.Fatalf("balance before: %v %v", bal, err)
	}
	f, err := os.OpenFile(e.file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("\n2024-05-01 * \"Import\"\n  Assets:Wallet  -100 USD\n  Expenses:Food\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	start := time.Now()
	if bal, err := directBalance(direct, favatest.Style130); err != nil || bal.Cmp(big.NewRat(100, 1)) != 0 {
		t.Fatalf("Fava asked at once: balance %v %v, want the stale 100 USD", bal, err)
	}
	resp, body := putRequire(t, api+"add_entries", "", "Assets:Wallet >= 0 USD", entriesBody(withdrawal("after import")))
	if resp.StatusCode != http.StatusConflict {
		t.Errorf("status %d, body %s; want 409 on the imported balance of 0", resp.StatusCode, body)
	}
	if !strings.Contains(body, `"balance":"0 USD"`) {
		t.Errorf("body %s; want the balance seen to be 0 USD", body)
	}
	t.Logf("answered after %v (watch delay %v)", time.Since(start).Round(time.Millisecond), delay)
	if got := walletBalance(t, e.file); got.Sign() != 0 {
		t.Errorf("bean-query: wallet at %s, want 0", got.FloatString(2))
	}
}

// TestRequireFavaBehind: when Fava's watcher has still not seen a change
// after favaproxy's wait, the conditional write is answered 503 with
// Retry-After and nothing is written, rather than checked against the
// ledger as it was.
func TestRequireFavaBehind(t *testing.T) {
	e := newAddEnvOpts(t, favatest.Options{Style: favatest.Style130, ReloadCostPerTxn: -1, WatchDelay: time.Minute}, walletLedger)
	e.start(t, Options{})
	f, err := os.OpenFile(e.file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("\n2024-05-01 * \"Import\"\n  Assets:Wallet  -100 USD\n  Expenses:Food\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	resp, body := putRequire(t, e.url, "", "Assets:Wallet >= 0 USD", entriesBody(withdrawal("while fava lags")))
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "nothing was written") {
		t.Errorf("status %d, Retry-After %q, body %s; want 503 with Retry-After, nothing written", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if got := e.front.calls.Load(); got != 0 {
		t.Errorf("%d add_entries calls reached Fava", got)
	}
	if got := walletBalance(t, e.file); got.Sign() != 0 {
		t.Errorf("bean-query: wallet at %s, want 0", got.FloatString(2))
	}
}
