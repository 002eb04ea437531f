package fava_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/fava"
)

// renderFava prints an entry the way Fava 1.27–1.30 writes an added entry
// (Beancount's printer, through fava.beans.str.to_string), except that
// posting amounts are printed as sent rather than re-rendered from
// Beancount's parse of them, and numbers are not aligned.
func renderFava(e fava.Entry) string {
	var b strings.Builder
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace
	switch e.Type {
	case fava.TypeTransaction:
		var parts []string
		if e.Payee != "" {
			parts = append(parts, `"`+esc(e.Payee)+`"`)
		}
		if e.Narration != "" {
			parts = append(parts, `"`+esc(e.Narration)+`"`)
		} else if e.Payee != "" {
			parts = append(parts, `""`)
		}
		tags, links := slices.Sorted(slices.Values(e.Tags)), slices.Sorted(slices.Values(e.Links))
		for _, t := range slices.Compact(tags) {
			parts = append(parts, "#"+t)
		}
		for _, l := range slices.Compact(links) {
			parts = append(parts, "^"+l)
		}
		b.WriteString(strings.TrimRight(e.Date+" "+e.Flag+" "+strings.Join(parts, " "), " ") + "\n")
		renderMeta(&b, "  ", e.Meta, esc)
		for _, p := range e.Postings {
			b.WriteString(strings.TrimRight("  "+p.Account+"  "+p.Amount, " ") + "\n")
			renderMeta(&b, "    ", p.Meta, esc)
		}
	case fava.TypeBalance:
		b.WriteString(e.Date + " balance " + e.Account + "  " + e.Number + " " + e.Currency + "\n")
		renderMeta(&b, "  ", e.Meta, esc)
	case fava.TypeNote:
		b.WriteString(e.Date + " note " + e.Account + ` "` + strings.ReplaceAll(e.Comment, `"`, "") + `"` + "\n")
		renderMeta(&b, "  ", e.Meta, esc)
	}
	return b.String()
}

func renderMeta(b *strings.Builder, indent string, m fava.Meta, esc func(string) string) {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "filename" && k != "lineno" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		var v string
		switch x := m[k].(type) {
		case string:
			v = `"` + esc(x) + `"`
		case bool:
			v = "FALSE"
			if x {
				v = "TRUE"
			}
		}
		b.WriteString(strings.TrimRight(indent+k+": "+v, " ") + "\n")
	}
}

// renderedLines is how many lines renderFava must print for e when no
// string holds a line break.
func renderedLines(e fava.Entry) int {
	n := 1 + len(e.Meta)
	for _, p := range e.Postings {
		n += 1 + len(p.Meta)
	}
	for _, k := range []string{"filename", "lineno"} {
		if _, ok := e.Meta[k]; ok {
			n--
		}
		for _, p := range e.Postings {
			if _, ok := p.Meta[k]; ok {
				n--
			}
		}
	}
	return n
}

// need returns the path of a tool, skipping the test when it is missing
// unless CI is set.
func need(tb testing.TB, tool string) string {
	tb.Helper()
	path, err := exec.LookPath(tool)
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s is not installed: %v", tool, err)
		}
		tb.Skipf("%s is not installed", tool)
	}
	return path
}

func beanCheck(tb testing.TB, ledger string) (string, error) {
	tb.Helper()
	bin := need(tb, "bean-check")
	path := filepath.Join(tb.TempDir(), "main.beancount")
	if err := os.WriteFile(path, []byte(ledger), 0o600); err != nil {
		tb.Fatal(err)
	}
	out, err := exec.Command(bin, path).CombinedOutput()
	return string(out), err
}

const ledgerHead = `option "operating_currency" "USD"
2020-01-01 open Assets:Bank
2020-01-01 open Expenses:Food
2020-01-01 open Equity:Opening
2024-05-31 pad Assets:Bank Equity:Opening
`

// TestRenderedEntriesPassBeanCheck writes the entries of the example
// request, with an idempotency link and metadata added, as Fava would, and
// checks that Beancount accepts the ledger.
func TestRenderedEntriesPassBeanCheck(t *testing.T) {
	a, err := fava.ParseAddEntries(readExample(t))
	if err != nil {
		t.Fatal(err)
	}
	entries := slices.Clone(a.Entries)
	if entries[0], err = fava.AddLink(entries[0], "idem-k1"); err != nil {
		t.Fatal(err)
	}
	if entries[1], err = fava.AddLink(entries[1], "idem-k1"); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{2, 3} {
		if entries[i], err = fava.AddMeta(entries[i], "idempotency-key", "idem-k1"); err != nil {
			t.Fatal(err)
		}
	}
	// Metadata of every kind Validate takes.
	var tx map[string]any
	if err := json.Unmarshal(entries[0], &tx); err != nil {
		t.Fatal(err)
	}
	tx["meta"].(map[string]any)["flag-ok"] = true
	tx["meta"].(map[string]any)["empty"] = nil
	tx["meta"].(map[string]any)["quoted"] = `back\slash "and" quotes ünïcödé`
	if entries[0], err = json.Marshal(tx); err != nil {
		t.Fatal(err)
	}
	b, err := fava.ParseAddEntries(fava.AddEntriesBody(entries))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Validate(fava.Rules{}); err != nil {
		t.Fatal(err)
	}
	var ledger strings.Builder
	ledger.WriteString(ledgerHead)
	for _, e := range b.Typed {
		ledger.WriteString("\n" + renderFava(e))
	}
	if out, err := beanCheck(t, ledger.String()); err != nil {
		t.Fatalf("bean-check: %v\n%s\nledger:\n%s", err, out, ledger.String())
	}
}

// TestNoteBackslashBreaksLedger pins why Validate refuses a backslash in a
// note: Fava prints the comment unescaped, and the string swallows what
// follows.
func TestNoteBackslashBreaksLedger(t *testing.T) {
	note := fava.Entry{Type: fava.TypeNote, Date: "2024-06-04", Account: "Assets:Bank", Comment: `ends with \`}
	next := fava.Entry{Type: fava.TypeNote, Date: "2024-06-05", Account: "Assets:Bank", Comment: "next"}
	ledger := ledgerHead + "\n" + renderFava(note) + "\n" + renderFava(next)
	if out, err := beanCheck(t, ledger); err == nil {
		t.Fatalf("bean-check accepted a note ending in a backslash:\n%s", out)
	}
	if err := fava.Validate([]fava.Entry{note}, fava.Rules{}); err == nil {
		t.Fatal("Validate accepted a note with a backslash")
	}
}

// TestFlagsParse checks that every flag Validate takes makes a transaction
// Beancount reads.
func TestFlagsParse(t *testing.T) {
	var ledger strings.Builder
	ledger.WriteString("2020-01-01 open Assets:Bank\n2020-01-01 open Expenses:Food\n")
	for _, f := range fava.Flags {
		e := fava.Entry{Type: fava.TypeTransaction, Date: "2024-06-01", Flag: string(f), Narration: "flag " + string(f),
			Postings: []fava.Posting{{Account: "Expenses:Food", Amount: "1 USD"}, {Account: "Assets:Bank"}}}
		if err := fava.Validate([]fava.Entry{e}, fava.Rules{}); err != nil {
			t.Fatal(err)
		}
		ledger.WriteString("\n" + renderFava(e))
	}
	if out, err := beanCheck(t, ledger.String()); err != nil {
		t.Fatalf("bean-check: %v\n%s\nledger:\n%s", err, out, ledger.String())
	}
}

// python returns a Python interpreter that imports Beancount's parser.
func python(tb testing.TB) string {
	tb.Helper()
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(p)
		if err != nil {
			continue
		}
		if exec.Command(path, "-c", "import beancount.parser.parser").Run() == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		tb.Fatal("no python3 with Beancount's parser (Debian: python3-beancount, installed with beancount)")
	}
	tb.Skip("no python3 with Beancount's parser")
	return ""
}

// The check Fava's deserialise_posting makes (serialisation.py, 1.27 to
// 1.30.16): the amount must parse as the rest of a posting line.
const favaAmountCheck = `
import json, sys
from beancount.parser.parser import parse_string
bad = []
for amount in json.load(sys.stdin):
    entries, errors, _ = parse_string('2000-01-01 * "" ""\n Assets:Account ' + amount)
    if errors or len(entries) != 1 or len(entries[0].postings) != 1:
        bad.append(amount)
json.dump(bad, sys.stdout)
`

// TestPostingAmountsParseInBeancount checks that amounts CheckPostingAmount
// accepts are amounts Fava accepts, with the parser Fava uses.
func TestPostingAmountsParseInBeancount(t *testing.T) {
	accepted := []string{
		"", "12.5 USD", "-11 EUR @ 1.136363 USD", "-11 EUR @@ 12.50 USD", "1,234.56 USD", "12. USD",
		"USD", "10", "(10 + 2.5) / 3 * -1 USD", "+5 USD", "--5 USD", "10 HOOL {}", "10 HOOL {500 USD}",
		"10 HOOL {{5000 USD}}", "10 HOOL {500.00 USD, 2024-01-01}", `10 HOOL {500 USD, 2024-01-01, "lot 1"}`,
		"10 HOOL {500 # 9.95 USD}", "10 HOOL {# 9.95 USD}", "-10 HOOL {} @ 510 USD",
		"1 NT.TO", "1 A'B_C-D.E", "1 TLT_040921C144", "  7 USD  ", "1USD", "10 HOOL {2024-01-01}",
		`10 HOOL {"lot"}`, "5 USD @", // the last one is refused below
	}
	accepted = accepted[:len(accepted)-1]
	for _, a := range accepted {
		if why := fava.CheckPostingAmount(a); why != "" {
			t.Errorf("CheckPostingAmount(%q): %s", a, why)
		}
	}
	refused := []string{
		"5 USD @", "1 V", "1 usd", "1 USD ; c", "1 USD\n", "1 2 USD", "{", "1 HOOL {5 USD", "1 HOOL 5 USD}", "@ 5 USD @ 6 USD",
		"1.2.3 USD", ".5 USD", "1 USD #tag", "1 USD ^link", "1 USD key: 1", "1 HOOL {2024-13-01}", `1 HOOL {"a\"b"}`,
		"(1 USD", "1) USD", "1 + USD", "1 HOOL {# USD, #}", "€5",
		"1\tUSD",       // Beancount takes a tab; a posting amount has no need for one
		"-10 HOOL {*}", // the average-cost merge marker: Beancount 2.3 refuses it
	}
	for _, a := range refused {
		if why := fava.CheckPostingAmount(a); why == "" {
			t.Errorf("CheckPostingAmount(%q) accepted", a)
		}
	}
	py := python(t)
	in, _ := json.Marshal(accepted)
	cmd := exec.Command(py, "-c", favaAmountCheck)
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var bad []string
	if err := json.Unmarshal(out, &bad); err != nil {
		t.Fatalf("python output %q: %v", out, err)
	}
	if len(bad) > 0 {
		t.Fatalf("amounts accepted here that Beancount refuses: %q", bad)
	}
}
