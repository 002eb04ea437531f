// Package setcheck is a set checker in the style of Jepsen's: every write a
// test attempts carries a unique id, rendered as a Beancount link on the
// transaction (for example ^w-3-17). The test records what each write's
// answer said (acknowledged, failed, or indeterminate), then Check reads the
// final ledger, counts every id's links, runs bean-check (and cross-checks
// the links with bean-query) and classifies the outcome.
package setcheck

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/checksum"
)

// DefaultPrefix is the prefix of the ids a Checker owns when Prefix is empty.
const DefaultPrefix = "w-"

type outcome int

const (
	attempted outcome = iota
	acked
	failed
	indeterminate
)

// Checker records attempted writes. It is safe for concurrent use.
type Checker struct {
	// Prefix marks the links the checker owns: a link with this prefix
	// that was never attempted is unexpected. Empty means DefaultPrefix.
	Prefix string

	// mu guards ids.
	mu  sync.Mutex
	ids map[string]outcome
}

// New returns an empty Checker with DefaultPrefix.
func New() *Checker { return &Checker{Prefix: DefaultPrefix} }

func (c *Checker) set(id string, o outcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids == nil {
		c.ids = map[string]outcome{}
	}
	c.ids[id] = o
}

// Attempt records that a write of id is about to be sent.
func (c *Checker) Attempt(id string) { c.set(id, attempted) }

// Ack records that the write of id was acknowledged (a 2xx answer).
func (c *Checker) Ack(id string) { c.set(id, acked) }

// Fail records that the write of id definitely did not happen.
func (c *Checker) Fail(id string) { c.set(id, failed) }

// Indeterminate records that the write of id may or may not have happened
// (a timeout, a dropped connection, an HTML 500 mid-write).
func (c *Checker) Indeterminate(id string) { c.set(id, indeterminate) }

// Report is the outcome of a run.
type Report struct {
	Attempted     int `json:"attempted"`
	Acked         int `json:"acked"`
	Failed        int `json:"failed"`
	Indeterminate int `json:"indeterminate"`
	// Lost counts acknowledged ids that are not in the ledger.
	Lost int `json:"lost"`
	// Duplicated counts ids that are in the ledger more than once.
	Duplicated int `json:"duplicated"`
	// Unexpected counts ids in the ledger that were never attempted or
	// whose write failed.
	Unexpected int `json:"unexpected"`
	// Recovered counts indeterminate ids that are in the ledger once or
	// more (they did happen).
	Recovered int `json:"recovered"`
	// Pending counts ids attempted but never resolved (a test bug).
	Pending int `json:"pending,omitempty"`
	// Found counts the owned ids in the ledger (each once).
	Found int `json:"found"`

	BeanCheckOK     bool   `json:"bean_check_ok"`
	BeanCheckOutput string `json:"bean_check_output,omitempty"`
	// BeanQueryLinks counts the owned link occurrences bean-query saw, for
	// comparison with the checker's own reading; -1 when not run.
	BeanQueryLinks int `json:"bean_query_links"`

	// Samples of offending ids, for diagnosis.
	LostIDs       []string `json:"lost_ids,omitempty"`
	DuplicatedIDs []string `json:"duplicated_ids,omitempty"`
	UnexpectedIDs []string `json:"unexpected_ids,omitempty"`
}

// OK reports whether nothing was lost, duplicated or unexpected and the
// ledger passed bean-check.
func (r Report) OK() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.Unexpected == 0 && r.BeanCheckOK
}

// String renders the report as one JSON line.
func (r Report) String() string {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Sprintf(`{"error":%q}`, err.Error())
	}
	return string(b)
}

// ErrDisagree means bean-query read the owned links differently from the
// checker's own reading: on a ledger that passes bean-check, a sign that
// its text is damaged in a way a line-based reading cannot follow.
var ErrDisagree = errors.New("setcheck: bean-query and the checker disagree")

// ErrNoTools means bean-check or bean-query is not on PATH.
var ErrNoTools = errors.New("setcheck: bean-check or bean-query not on PATH (install Debian's beancount)")

// RequireTools skips tb when Beancount's tools are missing, or fails it when
// the environment variable CI is set.
func RequireTools(tb testing.TB) {
	tb.Helper()
	for _, tool := range []string{"bean-check", "bean-query"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				tb.Fatalf("%s not on PATH in CI: %v", tool, err)
			}
			tb.Skipf("%s not on PATH: %v", tool, err)
		}
	}
}

const sampleMax = 10

// Check reads the ledger whose main file is ledgerMain (and every file it
// includes), counts each owned id's links on transaction header lines, runs
// bean-check, cross-checks the link count with bean-query when bean-check
// passed, and classifies every id. It returns ErrNoTools when the tools are
// missing, and an error when bean-query and the checker disagree.
func (c *Checker) Check(ledgerMain string) (Report, error) {
	prefix := c.Prefix
	if prefix == "" {
		prefix = DefaultPrefix
	}
	r := Report{BeanQueryLinks: -1}
	counts, err := CountLinks(ledgerMain, prefix)
	if err != nil {
		return r, err
	}
	c.mu.Lock()
	ids := make(map[string]outcome, len(c.ids))
	for k, v := range c.ids {
		ids[k] = v
	}
	c.mu.Unlock()

	sample := func(list *[]string, id string) {
		if len(*list) < sampleMax {
			*list = append(*list, id)
		}
	}
	keys := make([]string, 0, len(ids))
	for id := range ids {
		keys = append(keys, id)
	}
	sort.Strings(keys)
	for _, id := range keys {
		n := counts[id]
		r.Attempted++
		switch ids[id] {
		case acked:
			r.Acked++
			if n == 0 {
				r.Lost++
				sample(&r.LostIDs, id)
			}
		case failed:
			r.Failed++
			if n > 0 {
				r.Unexpected++
				sample(&r.UnexpectedIDs, id)
			}
		case indeterminate:
			r.Indeterminate++
			if n > 0 {
				r.Recovered++
			}
		default:
			r.Pending++
		}
	}
	found := make([]string, 0, len(counts))
	for id := range counts {
		found = append(found, id)
	}
	sort.Strings(found)
	for _, id := range found {
		r.Found++
		if counts[id] > 1 {
			r.Duplicated++
			sample(&r.DuplicatedIDs, id)
		}
		if _, ok := ids[id]; !ok {
			r.Unexpected++
			sample(&r.UnexpectedIDs, id)
		}
	}

	if _, err := exec.LookPath("bean-check"); err != nil {
		return r, ErrNoTools
	}
	out, err := run("bean-check", ledgerMain)
	r.BeanCheckOK = err == nil
	r.BeanCheckOutput = truncate(printable(strings.TrimSpace(out)), 1000)
	if !r.BeanCheckOK {
		return r, nil
	}
	if _, err := exec.LookPath("bean-query"); err != nil {
		return r, ErrNoTools
	}
	qcounts, err := BeanQueryLinks(ledgerMain, prefix)
	if err != nil {
		return r, err
	}
	total, qtotal := 0, 0
	for _, n := range counts {
		total += n
	}
	for id, n := range qcounts {
		qtotal += n
		if counts[id] != n {
			return r, fmt.Errorf("%w: bean-query counts %d links %s, the checker %d", ErrDisagree, n, id, counts[id])
		}
	}
	r.BeanQueryLinks = qtotal
	if qtotal != total {
		return r, fmt.Errorf("%w: bean-query saw %d owned links, the checker %d", ErrDisagree, qtotal, total)
	}
	return r, nil
}

// printable drops control characters other than newlines (a torn file can
// hold runs of NUL bytes) so the report stays one readable line.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\n' && r != '\t' {
			return -1
		}
		return r
	}, s)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func run(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// BeanQueryLinks asks bean-query for the links of every transaction of the
// ledger and counts those with prefix, one per transaction that has it.
func BeanQueryLinks(ledgerMain, prefix string) (map[string]int, error) {
	out, err := run("bean-query", "-q", "-f", "csv", ledgerMain, "SELECT DISTINCT filename, lineno, links")
	if err != nil {
		return nil, fmt.Errorf("bean-query: %w\n%s", err, truncate(out, 2000))
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("bean-query output: %w", err)
	}
	counts := map[string]int{}
	for i, row := range rows {
		if i == 0 || len(row) < 3 {
			continue
		}
		for _, l := range strings.Split(row[2], ",") {
			if l = strings.TrimSpace(l); strings.HasPrefix(l, prefix) {
				counts[l]++
			}
		}
	}
	return counts, nil
}

var (
	txnHeaderRe = regexp.MustCompile(`^\d{4}[-/]\d{2}[-/]\d{2}\s+(\*|!|txn|[&#?%PSTCURM])(\s|$)`)
	includeRe   = regexp.MustCompile(`^include\s+"((?:[^"\\]|\\.)*)"`)
)

// CountLinks reads the ledger whose main file is ledgerMain, following
// includes (globs, relative to the including file), and counts, per link
// with prefix, the transactions whose header line carries it. Links in
// comments and inside strings do not count; a transaction that repeats a
// link counts once, as Beancount keeps links as a set.
func CountLinks(ledgerMain, prefix string) (map[string]int, error) {
	counts := map[string]int{}
	seen := map[string]bool{}
	var walk func(path string) error
	walk = func(path string) error {
		abs, err := filepath.Abs(path)
		if err != nil {
			return err
		}
		if seen[abs] {
			return nil
		}
		seen[abs] = true
		raw, err := os.ReadFile(abs)
		if err != nil {
			return fmt.Errorf("setcheck: read ledger: %w", err)
		}
		for _, line := range strings.Split(string(checksum.Normalize(raw)), "\n") {
			if m := includeRe.FindStringSubmatch(line); m != nil {
				pat := m[1]
				if !filepath.IsAbs(pat) {
					pat = filepath.Join(filepath.Dir(abs), pat)
				}
				matches, _ := filepath.Glob(pat)
				sort.Strings(matches)
				for _, f := range matches {
					if err := walk(f); err != nil {
						return err
					}
				}
				continue
			}
			if !txnHeaderRe.MatchString(line) {
				continue
			}
			for l := range headerLinks(line) {
				if strings.HasPrefix(l, prefix) {
					counts[l]++
				}
			}
		}
		return nil
	}
	if err := walk(ledgerMain); err != nil {
		return nil, err
	}
	return counts, nil
}

// headerLinks returns the set of ^links of a transaction header line,
// skipping strings and stopping at a comment.
func headerLinks(line string) map[string]bool {
	links := map[string]bool{}
	for i := 0; i < len(line); {
		switch c := line[i]; {
		case c == ';':
			return links
		case c == '"':
			j := i + 1
			for j < len(line) && line[j] != '"' {
				if line[j] == '\\' {
					j++
				}
				j++
			}
			i = j + 1
		case c == '^' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			j := i + 1
			for j < len(line) && isLinkChar(line[j]) {
				j++
			}
			if j > i+1 {
				links[line[i+1:j]] = true
			}
			i = j
		default:
			i++
		}
	}
	return links
}

// isLinkChar matches the ASCII characters Beancount allows in a link.
func isLinkChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '/' || c == '.' || c >= 0x80
}

// BeanQueryBalances asks bean-query for the units each account holds per
// currency: account → currency → number, over every entry of the ledger.
// bean-query writes numbers at the precision the ledger uses for their
// currency, so the ledger's numbers should not have more places than that.
func BeanQueryBalances(ledgerMain string) (map[string]map[string]*big.Rat, error) {
	out, err := run("bean-query", "-q", "-f", "csv", ledgerMain,
		"SELECT account, currency, sum(number) GROUP BY account, currency")
	if err != nil {
		return nil, fmt.Errorf("bean-query: %w\n%s", err, truncate(out, 2000))
	}
	rows, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("bean-query output: %w", err)
	}
	bal := map[string]map[string]*big.Rat{}
	for i, row := range rows {
		if i == 0 || len(row) != 3 {
			continue
		}
		account, currency := strings.TrimSpace(row[0]), strings.TrimSpace(row[1])
		n, ok := new(big.Rat).SetString(strings.ReplaceAll(strings.TrimSpace(row[2]), ",", ""))
		if !ok {
			return nil, fmt.Errorf("bean-query output: %q is not a number", row[2])
		}
		if bal[account] == nil {
			bal[account] = map[string]*big.Rat{}
		}
		bal[account][currency] = n
	}
	return bal, nil
}
