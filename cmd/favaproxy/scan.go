package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/config"
)

func newScanCmd() *cobra.Command {
	def := config.Default().Idempotency
	cmd := &cobra.Command{
		Use:   "scan LEDGER [--json]",
		Short: "List idempotency keys in a ledger and report duplicated writes",
		Long: `scan reads LEDGER (and the files it includes) and prints every idempotency
key with the number of entries that carry it and where they are: the links
^<prefix>KEY of transactions and the <meta-key> metadata of other entries.

It reports as duplicates:
  - a key on more than one separate write: entries with the key that are not
    next to each other (Fava writes the entries of one request together);
  - transactions identical in date, payee, narration and postings, with or
    without keys: what a client that retried without a key leaves behind.

--prefix (default: idempotency.prefix, idem-) tells keys from other links;
with an empty --prefix every link is taken for a key.

Exit status: 0 when there are no duplicates, 1 when there are, 2 when the
ledger cannot be read or on a usage error.`,
		Args: usageArgs(cobra.ExactArgs(1)),
	}
	asJSON := cmd.Flags().Bool("json", false, "print the report as JSON")
	prefix := cmd.Flags().String("prefix", def.Prefix, "idempotency key prefix of the links")
	metaKey := cmd.Flags().String("meta-key", def.MetaKey, "metadata key carrying keys on balances and notes")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		rep, err := scanLedger(args[0], *prefix, *metaKey)
		if err != nil {
			return &exitError{code: exitUsage, msg: err.Error()}
		}
		out := cmd.OutOrStdout()
		if *asJSON {
			enc := json.NewEncoder(out)
			enc.SetIndent("", "  ")
			if err := enc.Encode(rep); err != nil {
				return err
			}
		} else {
			rep.writeText(out)
		}
		if rep.Duplicates() {
			return &exitError{code: exitFailure}
		}
		return nil
	}
	return cmd
}

// location is where an entry starts.
type location struct {
	File string `json:"file"`
	Line int    `json:"line"`
}

func (l location) String() string { return fmt.Sprintf("%s:%d", l.File, l.Line) }

// scanKey is one idempotency key found in a ledger.
type scanKey struct {
	Key string `json:"key"`
	// Count is the number of entries carrying the key.
	Count int `json:"count"`
	// Writes is the number of separate runs of adjacent entries with the
	// key: more than one means the key was written more than once.
	Writes    int        `json:"writes"`
	Locations []location `json:"locations"`
}

// scanTxn is a group of identical transactions.
type scanTxn struct {
	Date      string     `json:"date"`
	Payee     string     `json:"payee"`
	Narration string     `json:"narration"`
	Postings  []string   `json:"postings"`
	Locations []location `json:"locations"`
}

// scanReport is what scan finds.
type scanReport struct {
	Ledger                string    `json:"ledger"`
	Keys                  []scanKey `json:"keys"`
	DuplicateKeys         []scanKey `json:"duplicate_keys"`
	DuplicateTransactions []scanTxn `json:"duplicate_transactions"`
}

// Duplicates reports whether the report found any duplicate.
func (r *scanReport) Duplicates() bool {
	return len(r.DuplicateKeys) > 0 || len(r.DuplicateTransactions) > 0
}

// scanLedger indexes the ledger whose main file is main and reports its
// keys and duplicates.
func scanLedger(main, prefix, metaKey string) (*scanReport, error) {
	abs, err := filepath.Abs(main)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", main, err)
	}
	ix := beancount.NewIndex(abs, beancount.IndexOptions{MetaKey: metaKey})
	if err := ix.Refresh(); err != nil {
		return nil, fmt.Errorf("scan %s: %w", main, err)
	}
	rep := &scanReport{Ledger: abs, Keys: []scanKey{}, DuplicateKeys: []scanKey{}, DuplicateTransactions: []scanTxn{}}

	type keyAcc struct {
		locs []location
		// last is the file and block index of the key's latest entry, to
		// count runs of adjacent entries.
		lastFile string
		lastIdx  int
		writes   int
	}
	keys := map[string]*keyAcc{}
	type txnAcc struct {
		t    scanTxn
		locs []location
	}
	txns := map[string]*txnAcc{}
	var txnOrder []string

	dir := filepath.Dir(abs)
	for _, file := range ix.Ledger().Files {
		name := file
		if rel, err := filepath.Rel(dir, file); err == nil && !strings.HasPrefix(rel, "..") {
			name = rel
		}
		for i, b := range ix.Blocks(file) {
			loc := location{File: name, Line: b.Line}
			seen := map[string]bool{}
			add := func(k string) {
				if seen[k] {
					return
				}
				seen[k] = true
				a := keys[k]
				if a == nil {
					a = &keyAcc{}
					keys[k] = a
				}
				if a.writes == 0 || a.lastFile != file || a.lastIdx != i-1 {
					a.writes++
				}
				a.lastFile, a.lastIdx = file, i
				a.locs = append(a.locs, loc)
			}
			if b.Kind == beancount.KindTransaction {
				for _, l := range b.Links {
					if strings.HasPrefix(l, prefix) {
						add(l)
					}
				}
			}
			for _, m := range b.Meta {
				if m.Key == metaKey && b.Kind != beancount.KindTransaction && m.Value != "" {
					add(m.Value)
				}
			}
			if b.Kind == beancount.KindTransaction {
				postings := []string{}
				for _, p := range b.Postings() {
					postings = append(postings, p.Text)
				}
				sig := strings.Join(append([]string{b.Date, b.Payee, b.Narration}, postings...), "\x00")
				a := txns[sig]
				if a == nil {
					a = &txnAcc{t: scanTxn{Date: b.Date, Payee: b.Payee, Narration: b.Narration, Postings: postings}}
					txns[sig] = a
					txnOrder = append(txnOrder, sig)
				}
				a.locs = append(a.locs, loc)
			}
		}
	}

	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		a := keys[k]
		sk := scanKey{Key: k, Count: len(a.locs), Writes: a.writes, Locations: a.locs}
		rep.Keys = append(rep.Keys, sk)
		if sk.Writes > 1 {
			rep.DuplicateKeys = append(rep.DuplicateKeys, sk)
		}
	}
	for _, sig := range txnOrder {
		if a := txns[sig]; len(a.locs) > 1 {
			a.t.Locations = a.locs
			rep.DuplicateTransactions = append(rep.DuplicateTransactions, a.t)
		}
	}
	return rep, nil
}

// writeText prints the report for people.
func (r *scanReport) writeText(w io.Writer) {
	fmt.Fprintf(w, "ledger %s: %d idempotency keys\n", r.Ledger, len(r.Keys))
	for _, k := range r.Keys {
		fmt.Fprintf(w, "key %s: %s in %s\n", k.Key, plural(k.Count, "entry", "entries"), plural(k.Writes, "write", "writes"))
		for _, l := range k.Locations {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	for _, k := range r.DuplicateKeys {
		fmt.Fprintf(w, "DUPLICATE key %s: written %d times (%s)\n", k.Key, k.Writes, plural(k.Count, "entry", "entries"))
		for _, l := range k.Locations {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	for _, t := range r.DuplicateTransactions {
		fmt.Fprintf(w, "DUPLICATE transaction %s %q %q: %d copies\n", t.Date, t.Payee, t.Narration, len(t.Locations))
		for _, l := range t.Locations {
			fmt.Fprintf(w, "  %s\n", l)
		}
	}
	if !r.Duplicates() {
		fmt.Fprintln(w, "no duplicates")
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
