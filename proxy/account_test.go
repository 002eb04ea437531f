package proxy

import (
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/ledger"
	"github.com/favaproxy/favaproxy/lock"
)

// countOpens returns how many lines of text open account.
func countOpens(text, account string) int {
	n := 0
	for _, l := range strings.Split(text, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[1] == "open" && f[2] == account {
			n++
		}
	}
	return n
}

// TestAddAccountConcurrent: ten concurrent add_account calls for one
// account, spread over two favaproxy servers that share the ledger's lock
// file, leave exactly one open line and all get a 2xx: one opened it, the
// others found it open.
func TestAddAccountConcurrent(t *testing.T) {
	for _, style := range emuStyles {
		t.Run(style, func(t *testing.T) {
			lockPath := filepath.Join(t.TempDir(), "ledger.lock")
			shared := Options{NewLocker: func(config.Ledger, lock.EtcdHooks) (ledger.Locker, error) { return lock.New(lockPath), nil }}
			a := startEmu(t, style, emuOpts{options: shared})
			b := startEmu(t, style, emuOpts{options: shared, main: a.main, upstreamURL: a.up.URL})
			b.style = style

			var wg sync.WaitGroup
			type answer struct {
				status int
				body   map[string]any
			}
			answers := make([]answer, 10)
			for i := range answers {
				env := a
				if i%2 == 1 {
					env = b
				}
				wg.Go(func() {
					resp, m := env.call(http.MethodPut, "add_account", nil,
						map[string]any{"account": "Assets:Wallet", "currencies": []string{"USD"}, "date": "2024-01-01"})
					answers[i] = answer{resp.StatusCode, m}
				})
			}
			wg.Wait()
			opened := 0
			for i, an := range answers {
				if an.status/100 != 2 {
					t.Fatalf("call %d: status %d %v", i, an.status, an.body)
				}
				d, _ := an.body["data"].(map[string]any)
				if d == nil {
					t.Fatalf("call %d: body %v without data", i, an.body)
				}
				if d["existing"] == false {
					opened++
				}
			}
			if opened != 1 {
				t.Fatalf("%d calls opened the account, want 1", opened)
			}
			file := a.read()
			if got, want := countOpens(file, "Assets:Wallet"), 1; got != want {
				t.Fatalf("%d open lines, want %d:\n%s", got, want, file)
			}
			if !strings.Contains(file, "2024-01-01 open Assets:Wallet USD\n") {
				t.Fatalf("open directive missing:\n%s", file)
			}
		})
	}
}

// TestAddAccountPlacement: the open goes right after the last open of the
// main file; an account already open is answered existing without a write.
func TestAddAccountPlacement(t *testing.T) {
	e := startEmu(t, emuStyles[0], emuOpts{})
	resp, m := e.call(http.MethodPut, "add_account", nil, map[string]any{"account": "Liabilities:Card", "date": "2024-01-02", "meta": map[string]any{"note": "visa"}})
	e.wantSuccess("add_account", resp, m)
	d := m["data"].(map[string]any)
	if d["existing"] != false || d["message"] != "Opened Liabilities:Card." {
		t.Fatalf("data %v", d)
	}
	file := e.read()
	want := "2024-01-01 open Equity:Opening\n2024-01-02 open Liabilities:Card\n  note: \"visa\"\n\n2024-02-01"
	if !strings.Contains(file, want) {
		t.Fatalf("file:\n%s\nwant it to contain:\n%s", file, want)
	}
	resp, m = e.call(http.MethodPut, "add_account", nil, map[string]any{"account": "Assets:Bank"})
	e.wantSuccess("add_account existing", resp, m)
	if d := m["data"].(map[string]any); d["existing"] != true {
		t.Fatalf("data %v, want existing true", d)
	}
	if got := e.read(); got != file {
		t.Fatalf("file changed for an open account:\n%s", got)
	}
}

// TestAddAccountInvalid: a name or currency that Beancount would not parse
// is refused with 400 naming the field, and nothing is written.
func TestAddAccountInvalid(t *testing.T) {
	e := startEmu(t, emuStyles[1], emuOpts{})
	before := e.read()
	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"account": "assets:lower"}, "account"},
		{map[string]any{"account": "Assets:X\n2024-01-01 open Assets:Y"}, "account"},
		{map[string]any{"account": "Assets:X", "currencies": []string{"usd"}}, "currencies[0]"},
		{map[string]any{"account": "Assets:X", "colour": "red"}, "colour"},
	} {
		resp, m := e.call(http.MethodPut, "add_account", nil, c.body)
		if got, want := resp.StatusCode, http.StatusBadRequest; got != want {
			t.Fatalf("%v: status %d, want %d (%v)", c.body, got, want, m)
		}
		if got := m["field"]; got != c.field {
			t.Fatalf("%v: field %v, want %s", c.body, got, c.field)
		}
	}
	if got := e.read(); got != before {
		t.Fatalf("file changed:\n%s", got)
	}
}

// TestAddAccountOutsideWriter: an outside writer changes the file between
// favaproxy's read and its write; favaproxy re-reads, re-checks and
// writes again after a backoff wait, keeping the outside change.
func TestAddAccountOutsideWriter(t *testing.T) {
	for _, style := range emuStyles {
		t.Run(style, func(t *testing.T) {
			e, ow, sleeps := startOutside(t, style, 1, nil)
			resp, m := e.call(http.MethodPut, "add_account", nil, map[string]any{"account": "Assets:Cash"})
			e.wantSuccess("add_account", resp, m)
			file := e.read()
			if countOpens(file, "Assets:Cash") != 1 || !strings.Contains(file, "; outside 1") {
				t.Fatalf("file:\n%s", file)
			}
			if got, want := ow.sourcePuts(), 2; got != want {
				t.Fatalf("%d PUT source, want %d", got, want)
			}
			if got, want := len(sleeps.all()), 1; got != want {
				t.Fatalf("%d waits, want %d", got, want)
			}
			if got := sleeps.busy(); got != 0 {
				t.Fatalf("ledger lock held during a backoff wait")
			}
		})
	}
}
