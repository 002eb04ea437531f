package setcheck

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(tb testing.TB, path, text string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		tb.Fatal(err)
	}
}

const head = `option "title" "Set"
2024-01-01 open Assets:Bank
2024-01-01 open Equity:Opening
include "more/*.beancount"

`

func txn(links string) string {
	return "2024-02-01 * \"p\" \"n\" " + links + "\n  Assets:Bank  1 USD\n  Equity:Opening\n\n"
}

func TestCountLinksOnlyRealLinks(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "main.beancount")
	write(t, main, head+
		"; 2024-02-01 * \"c\" ^w-0-1 commented out\n"+
		"2024-02-01 * \"a ^w-0-2 in a string\" \"b\" ^w-0-3 ; ^w-0-4 in a comment\n  Assets:Bank  1 USD\n  Equity:Opening\n\n"+
		"2024-02-01 note Assets:Bank \"x\" ^w-0-5\n\n"+
		txn("^w-0-3 ^w-0-6 ^w-0-6"))
	write(t, filepath.Join(dir, "more", "a.beancount"), txn("^w-0-7"))
	got, err := CountLinks(main, "w-")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{"w-0-3": 2, "w-0-6": 1, "w-0-7": 1}
	if len(got) != len(want) {
		t.Fatalf("counts=%v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("counts=%v, want %v", got, want)
		}
	}
}

func TestCheckClassifies(t *testing.T) {
	RequireTools(t)
	dir := t.TempDir()
	main := filepath.Join(dir, "main.beancount")
	write(t, main, head+txn("^w-1-1")+txn("^w-1-2")+txn("^w-1-2")+txn("^w-1-4")+txn("^w-9-9")+txn("^w-1-5"))
	write(t, filepath.Join(dir, "more", "a.beancount"), "")
	c := New()
	for _, id := range []string{"w-1-1", "w-1-2", "w-1-3", "w-1-4", "w-1-5", "w-1-6"} {
		c.Attempt(id)
	}
	c.Ack("w-1-1")           // present once: fine
	c.Ack("w-1-2")           // present twice: duplicated
	c.Ack("w-1-3")           // absent: lost
	c.Indeterminate("w-1-4") // present: recovered
	c.Fail("w-1-5")          // present although failed: unexpected
	c.Indeterminate("w-1-6") // absent: fine
	r, err := c.Check(main)
	if err != nil {
		t.Fatal(err)
	}
	want := Report{Attempted: 6, Acked: 3, Failed: 1, Indeterminate: 2, Lost: 1, Duplicated: 1, Unexpected: 2, Recovered: 1, Found: 5, BeanCheckOK: true, BeanQueryLinks: 6}
	if r.Attempted != want.Attempted || r.Acked != want.Acked || r.Failed != want.Failed || r.Indeterminate != want.Indeterminate ||
		r.Lost != want.Lost || r.Duplicated != want.Duplicated || r.Unexpected != want.Unexpected || r.Recovered != want.Recovered ||
		r.Found != want.Found || r.BeanCheckOK != want.BeanCheckOK || r.BeanQueryLinks != want.BeanQueryLinks {
		t.Fatalf("report=%s\nwant     %s", r, want)
	}
	if r.OK() {
		t.Fatal("OK() for a report with losses")
	}
	var back map[string]any
	if err := json.Unmarshal([]byte(r.String()), &back); err != nil || strings.Contains(r.String(), "\n") {
		t.Fatalf("String() is not one JSON line: %q (%v)", r.String(), err)
	}
}

func TestCheckTornLedgerFailsBeanCheck(t *testing.T) {
	RequireTools(t)
	dir := t.TempDir()
	main := filepath.Join(dir, "main.beancount")
	full := head + txn("^w-2-1") + txn("^w-2-2")
	write(t, main, full[:len(full)-30]) // cut in the middle of the last posting
	write(t, filepath.Join(dir, "more", "a.beancount"), "")
	c := New()
	c.Attempt("w-2-1")
	c.Ack("w-2-1")
	r, err := c.Check(main)
	if err != nil {
		t.Fatal(err)
	}
	if r.BeanCheckOK || r.BeanCheckOutput == "" {
		t.Fatalf("report=%s, want bean-check to fail on a torn ledger", r)
	}
}
