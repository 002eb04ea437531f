package beancount_test

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/internal/ledgergen"
)

// beanTool returns the path of a Beancount command. Without it the test is
// skipped, unless CI is set, where a missing tool is a failure.
func beanTool(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s not found on PATH (CI is set): %v", name, err)
		}
		tb.Skipf("%s not found on PATH: %v", name, err)
	}
	return p
}

// beanQuery runs bean-query on a ledger and fails the test when Beancount
// reports any error about the ledger.
func beanQuery(tb testing.TB, ledger string, format, query string) []byte {
	tb.Helper()
	cmd := exec.Command(beanTool(tb, "bean-query"), "-f", format, ledger, query)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("bean-query %s %q: %v\n%s", ledger, query, err, stderr.Bytes())
	}
	if s := strings.TrimSpace(stderr.String()); s != "" {
		tb.Fatalf("bean-query %s reports errors (the ledger must pass bean-check):\n%s", ledger, s)
	}
	return stdout.Bytes()
}

// entryKey names a transaction by file and line.
type entryKey struct {
	file string
	line int
}

// txnFacts are the links and tags of one transaction, sorted.
type txnFacts struct {
	links, tags string
}

func (f txnFacts) String() string { return fmt.Sprintf("links=[%s] tags=[%s]", f.links, f.tags) }

func sortedSet(items []string) string {
	items = slices.Clone(items)
	slices.Sort(items)
	return strings.Join(slices.Compact(items), ",")
}

// oracleTransactions asks bean-query for every posting's transaction
// file, line, links and tags. Padding transactions Beancount generates
// (flag P at a pad directive) are left out.
func oracleTransactions(tb testing.TB, ledger string) map[entryKey]txnFacts {
	tb.Helper()
	out := beanQuery(tb, ledger, "csv", "SELECT filename, lineno, links, tags, flag")
	recs, err := csv.NewReader(bytes.NewReader(out)).ReadAll()
	if err != nil {
		tb.Fatalf("parse bean-query csv: %v\n%s", err, out)
	}
	got := map[entryKey]txnFacts{}
	for _, r := range recs[1:] {
		if len(r) != 5 {
			tb.Fatalf("bean-query row %q: want 5 fields", r)
		}
		if strings.TrimSpace(r[4]) == "P" {
			continue
		}
		line, err := strconv.Atoi(strings.TrimSpace(r[1]))
		if err != nil {
			tb.Fatalf("bean-query lineno %q: %v", r[1], err)
		}
		got[entryKey{strings.TrimSpace(r[0]), line}] = txnFacts{
			links: sortedSet(splitList(r[2])), tags: sortedSet(splitList(r[3]))}
	}
	return got
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

var printedDirective = regexp.MustCompile(`^\d{4}-\d\d-\d\d (open|close) (\S+)`)

// oracleAccounts asks bean-query for the opened and the closed accounts.
func oracleAccounts(tb testing.TB, ledger string) (opened, closed []string) {
	tb.Helper()
	out := beanQuery(tb, ledger, "text", `PRINT FROM type = "open" OR type = "close"`)
	for _, line := range strings.Split(string(out), "\n") {
		m := printedDirective.FindStringSubmatch(line)
		switch {
		case m == nil:
		case m[1] == "open":
			opened = append(opened, m[2])
		default:
			closed = append(closed, m[2])
		}
	}
	slices.Sort(opened)
	slices.Sort(closed)
	return opened, closed
}

// checkAgainstBeancount compares what the index reads from a ledger with
// what bean-query reports about it.
func checkAgainstBeancount(t *testing.T, main string) {
	t.Helper()
	ix := beancount.NewIndex(main, beancount.IndexOptions{})
	if err := ix.Refresh(); err != nil {
		t.Fatal(err)
	}
	if p := ix.Ledger().Problems; len(p) > 0 {
		t.Errorf("problems loading %s: %q", main, p)
	}

	want := oracleTransactions(t, main)
	if len(want) == 0 {
		t.Fatalf("bean-query reports no transactions in %s", main)
	}
	got := map[entryKey]txnFacts{}
	var links []string
	ix.Transactions(func(file string, b beancount.Block) bool {
		links = append(links, b.Links...)
		if len(b.Postings()) == 0 {
			return true // bean-query lists postings; it cannot see this one
		}
		got[entryKey{file, b.Line}] = txnFacts{links: sortedSet(b.Links), tags: sortedSet(b.Tags)}
		return true
	})
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s:%d: bean-query reports a transaction the scanner does not", k.file, k.line)
		case g != w:
			t.Errorf("%s:%d: scanner %v, bean-query %v", k.file, k.line, g, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s:%d: scanner reports a transaction bean-query does not", k.file, k.line)
		}
	}
	for _, l := range links {
		if occ := ix.Link(l); len(occ) == 0 {
			t.Errorf("Link(%q) finds nothing", l)
		}
	}

	opened, closed := oracleAccounts(t, main)
	for _, a := range opened {
		if !ix.Opened(a) {
			t.Errorf("Opened(%q)=false; bean-query prints its open directive", a)
		}
	}
	var live []string
	for _, a := range opened {
		if _, found := slices.BinarySearch(closed, a); !found {
			live = append(live, a)
		}
	}
	if got, want := strings.Join(ix.Accounts(), " "), strings.Join(live, " "); got != want {
		t.Errorf("Accounts()=%s\nbean-query opened and not closed: %s", got, want)
	}
	var scanned []string
	for _, f := range ix.Ledger().Files {
		for _, b := range ix.Blocks(f) {
			if b.Kind == beancount.KindOpen {
				scanned = append(scanned, b.Accounts...)
			}
		}
	}
	slices.Sort(scanned)
	if got, want := strings.Join(scanned, " "), strings.Join(opened, " "); got != want {
		t.Errorf("open directives scanned: %s\nbean-query: %s", got, want)
	}
}

func TestOracleLedgers(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("..", "testdata", "ledgers", "*", "main.beancount"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no ledgers in testdata/ledgers: %v", err)
	}
	for _, main := range dirs {
		main, _ := filepath.Abs(main)
		t.Run(filepath.Base(filepath.Dir(main)), func(t *testing.T) {
			t.Parallel()
			checkAgainstBeancount(t, main)
		})
	}
}

func TestOracleGenerated(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	main := filepath.Join(t.TempDir(), "generated.beancount")
	if err := ledgergen.File(main, ledgergen.Options{Title: "Generated", Transactions: n, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	checkAgainstBeancount(t, main)
}
