package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/internal/proctest"
	"github.com/favaproxy/favaproxy/journal"
)

// putAs sends PUT api/name with a JSON body as user (the HTTP Basic user
// name, which is who favaproxy says wrote when no auth mode is set).
func putAs(tb testing.TB, base, user, name, body string) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPut, base+"/"+slug+"/api/"+name, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(user, "pw")
	res, err := client.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return res.StatusCode, string(b)
}

// TestAuditShowsWriters: writes of two users through the favaproxy binary
// in front of the emulator process show up in `favaproxy audit LEDGER
// --json` with the right users, kinds and outcomes, in order, with the
// checksums of the ledger before and after; --user selects one user's.
func TestAuditShowsWriters(t *testing.T) {
	requireProxy(t)
	ledger := newLedger(t, 10)
	emu := proctest.Start(t, bins.fakefava, "--style", favatest.Style130, "--listen", "127.0.0.1:0", ledger)
	base := startProxy(t, emu.URL(), ledger).URL()

	entry := string(entriesBody("audited"))
	writes := []struct{ user, name, body, kind string }{
		{"alice", "add_entries", entry, "add_entries"},
		{"bob", "add_account", `{"account":"Assets:Audit:Wallet"}`, "add_account"},
		{"alice", "add_account", `{"account":"Assets:Audit:Wallet"}`, "add_account"},
	}
	for _, w := range writes {
		if status, body := putAs(t, base, w.user, w.name, w.body); status != http.StatusOK {
			t.Fatalf("%s by %s: status %d %s", w.name, w.user, status, body)
		}
	}

	audit := func(args ...string) []journal.Record {
		t.Helper()
		out, err := exec.Command(bins.favaproxy, append([]string{"audit", "--json"}, append(args, ledger)...)...).Output()
		if err != nil {
			t.Fatalf("favaproxy audit %v: %v\n%s", args, err, out)
		}
		var recs []journal.Record
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			var r journal.Record
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("audit line %q: %v", sc.Text(), err)
			}
			recs = append(recs, r)
		}
		return recs
	}
	recs := audit()
	if got, want := len(recs), len(writes); got != want {
		t.Fatalf("audit shows %d records, want %d: %+v", got, want, recs)
	}
	for i, w := range writes {
		r := recs[i]
		if r.User != w.user || r.Kind != w.kind || r.Outcome != journal.OutcomeOK || r.Status != http.StatusOK {
			t.Errorf("record %d: user=%q kind=%q outcome=%q status=%d, want %s %s ok 200", i, r.User, r.Kind, r.Outcome, r.Status, w.user, w.kind)
		}
		if len(r.Files) != 1 || r.Files[0].Before == "" || r.Files[0].After == "" {
			t.Errorf("record %d: files %+v, want the ledger's checksums before and after", i, r.Files)
		}
	}
	if len(recs) == 3 {
		// The entry and the new account changed the file; the account
		// already open did not.
		if f := recs[0].Files[0]; f.Before == f.After {
			t.Errorf("add_entries record: file unchanged %+v", f)
		}
		if f := recs[1].Files[0]; f.Before == f.After || f.Before != recs[0].Files[0].After {
			t.Errorf("add_account record: %+v after %+v", f, recs[0].Files[0])
		}
		if f := recs[2].Files[0]; f.Before != f.After || f.Before != recs[1].Files[0].After {
			t.Errorf("existing account record: %+v after %+v", f, recs[1].Files[0])
		}
	}
	if got := audit("--user", "bob"); len(got) != 1 || got[0].User != "bob" {
		t.Errorf("audit --user bob: %+v, want bob's one write", got)
	}
}
