package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/internal/favatest"
)

// runScan runs `favaproxy scan args...` and returns its exit status and
// output.
func runScan(tb testing.TB, args ...string) (int, string) {
	tb.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"scan"}, args...), &stdout, &stderr)
	return code, stdout.String() + stderr.String()
}

func TestScanFindsDuplicatesInFixture(t *testing.T) {
	fixture := filepath.Join("..", "..", "testdata", "ledgers", "scan-dupes", "main.beancount")
	// The fixture's keys have no prefix: every link is a key.
	code, out := runScan(t, "--prefix=", fixture)
	if got, want := code, 1; got != want {
		t.Fatalf("exit=%d, want %d; output:\n%s", got, want, out)
	}
	for _, want := range []string{
		"DUPLICATE key pay-7: written 2 times",
		`DUPLICATE transaction 2024-06-01 "Cafe" "lunch": 2 copies`,
		"key pay-1: 2 entries in 1 write",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []string{"DUPLICATE key pay-1", "pay-9", "13.50"} {
		if strings.Contains(out, bad) {
			t.Errorf("output has %q:\n%s", bad, out)
		}
	}

	code, out = runScan(t, "--prefix=", "--json", fixture)
	if code != 1 {
		t.Fatalf("--json: exit=%d, want 1", code)
	}
	var rep scanReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json output is not a report: %v\n%s", err, out)
	}
	if got, want := len(rep.Keys), 3; got != want {
		t.Errorf("keys=%d, want %d (pay-1, pay-7, pay-10)", got, want)
	}
	if len(rep.DuplicateKeys) != 1 || rep.DuplicateKeys[0].Key != "pay-7" {
		t.Errorf("duplicate keys = %+v, want pay-7", rep.DuplicateKeys)
	}
	if len(rep.DuplicateTransactions) != 1 || len(rep.DuplicateTransactions[0].Locations) != 2 {
		t.Errorf("duplicate transactions = %+v, want the lunch twice", rep.DuplicateTransactions)
	}
}

// TestScanFindsRetriesWithoutKeys makes a damaged ledger the way it happens:
// the same add_entries sent twice to Fava (the emulator) without a key.
// Then scan exits 1; with the prefix set, links that are not keys are not
// reported.
func TestScanFindsRetriesWithoutKeys(t *testing.T) {
	file := filepath.Join(t.TempDir(), "main.beancount")
	ledger := "option \"title\" \"Retried\"\n\n2024-01-01 open Assets:Bank\n2024-01-01 open Expenses:Food\n"
	if err := os.WriteFile(file, []byte(ledger), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out := runScan(t, file)
	if code != 0 || !strings.Contains(out, "no duplicates") {
		t.Fatalf("clean ledger: exit=%d, want 0:\n%s", code, out)
	}
	fs, err := favatest.New(favatest.Options{ReloadCostPerTxn: -1}, file)
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	up := httptest.NewServer(fs)
	defer up.Close()
	body := `{"entries":[{"t":"Transaction","date":"2024-06-01","flag":"*","payee":"Hook","narration":"payment","tags":[],"links":["inv-1"],"meta":{},` +
		`"postings":[{"account":"Expenses:Food","amount":"5 USD"},{"account":"Assets:Bank","amount":""}]}]}`
	for range 2 {
		req, _ := http.NewRequest("PUT", up.URL+"/retried/api/add_entries", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("add_entries: status %d", resp.StatusCode)
		}
	}
	code, out = runScan(t, "--prefix", "fp-", file)
	if code != 1 || !strings.Contains(out, `DUPLICATE transaction 2024-06-01 "Hook" "payment": 2 copies`) {
		t.Fatalf("exit=%d, want 1 and the payment twice:\n%s", code, out)
	}
	if strings.Contains(out, "inv-1") {
		t.Errorf("link inv-1 without the prefix fp- was taken for a key:\n%s", out)
	}
}
