package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/internal/proctest"
)

// TestAddAccountAcrossProcesses: ten concurrent add_account calls for one
// account through two favaproxy processes in front of one Fava leave
// exactly one open directive, and every call gets a 2xx in Fava's wire
// style: one opened the account, the others found it open.
func TestAddAccountAcrossProcesses(t *testing.T) {
	requireProxy(t)
	for _, style := range []string{favatest.Style127, favatest.Style130} {
		t.Run(style, func(t *testing.T) {
			ledger := newLedger(t, 20)
			emu := proctest.Start(t, bins.fakefava, "--style", style, "--listen", "127.0.0.1:0", ledger)
			proxies := []*proctest.Proc{startProxy(t, emu.URL(), ledger), startProxy(t, emu.URL(), ledger)}

			const account = "Assets:Favaproxy:Wallet"
			answers := make([]accountAnswer, 10)
			var wg sync.WaitGroup
			for i := range answers {
				base := proxies[i%2].URL()
				wg.Go(func() {
					answers[i] = addAccount(base, account)
				})
			}
			wg.Wait()
			opened := 0
			for i, a := range answers {
				if a.err != nil || a.status/100 != 2 {
					t.Fatalf("call %d: status %d, %v, body %v", i, a.status, a.err, a.body)
				}
				if _, has := a.body["success"]; has != (style == favatest.Style127) {
					t.Fatalf("call %d: body %v not in the %s wire style", i, a.body, style)
				}
				d, _ := a.body["data"].(map[string]any)
				if d == nil {
					t.Fatalf("call %d: body %v without data", i, a.body)
				}
				if d["existing"] == false {
					opened++
				}
			}
			if opened != 1 {
				t.Fatalf("%d calls opened the account, want 1", opened)
			}
			if got := countIn(t, ledger, " open "+account); got != 1 {
				t.Fatalf("%d open directives of %s, want 1", got, account)
			}
		})
	}
}

// accountAnswer is favaproxy's answer to an add_account.
type accountAnswer struct {
	status int
	body   map[string]any
	err    error
}

// addAccount sends favaproxy's add_account for account to base.
func addAccount(base, account string) (a accountAnswer) {
	body := fmt.Sprintf(`{"account": %q, "currencies": ["USD"]}`, account)
	req, err := http.NewRequest(http.MethodPut, base+"/"+slug+"/api/add_account", strings.NewReader(body))
	if err != nil {
		a.err = err
		return a
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		a.err = err
		return a
	}
	defer resp.Body.Close()
	a.status = resp.StatusCode
	a.err = json.NewDecoder(resp.Body).Decode(&a.body)
	return a
}
