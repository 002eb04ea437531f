package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/journal"
)

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit LEDGER",
		Short: "Print the journal of writes to a ledger",
		Long: `audit prints the journal favaproxy keeps of every write to LEDGER: when,
who, which route, the idempotency key, how it ended, and the checksums of the
files it touched before and after. The journal is in the ledger's state
directory (state_dir; default .favaproxy beside the ledger).`,
		Args: usageArgs(cobra.ExactArgs(1)),
	}
	since := cmd.Flags().String("since", "", "only writes at or after this time (RFC 3339, a date, or a duration ago like 24h)")
	user := cmd.Flags().String("user", "", "only writes by this user")
	asJSON := cmd.Flags().Bool("json", false, "print one JSON record per line")
	stateDir := cmd.Flags().String("state-dir", "", "the ledger's state directory (default .favaproxy beside the ledger)")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		f := journal.Filter{User: *user}
		if *since != "" {
			t, err := parseSince(*since, time.Now())
			if err != nil {
				return &usageError{err}
			}
			f.Since = t
		}
		l := config.Ledger{File: args[0], StateDir: *stateDir}
		path := journal.Path(l.StatePath(), l.File)
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("no journal for %s: %w", l.File, err)
		}
		out := cmd.OutOrStdout()
		var print func(journal.Record) error
		var flush func() error
		if *asJSON {
			enc := json.NewEncoder(out)
			print = func(r journal.Record) error { return enc.Encode(r) }
			flush = func() error { return nil }
		} else {
			print, flush = auditTable(out)
		}
		err := journal.Read(path, f, print)
		if ferr := flush(); err == nil {
			err = ferr
		}
		var ce *journal.CorruptError
		if errors.As(err, &ce) {
			fmt.Fprintf(cmd.ErrOrStderr(), "favaproxy: %v\n", err)
			return &exitError{code: exitFailure}
		}
		return err
	}
	return cmd
}

// auditTable prints records as aligned columns.
func auditTable(w io.Writer) (print func(journal.Record) error, flush func() error) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tUSER\tKIND\tROUTE\tKEY\tENTRIES\tBATCH\tSTATUS\tOUTCOME\tFILES")
	print = func(r journal.Record) error {
		var files []string
		for _, fc := range r.Files {
			files = append(files, fmt.Sprintf("%s %s→%s", fc.Path, short(fc.Before), short(fc.After)))
		}
		_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n",
			r.Time.UTC().Format(time.RFC3339), r.User, r.Kind, r.Route, dash(r.Key),
			r.Entries, r.Batch, r.Status, r.Outcome, dash(strings.Join(files, "; ")))
		return err
	}
	return print, tw.Flush
}

func short(sum string) string {
	if len(sum) > 8 {
		return sum[:8]
	}
	return dash(sum)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseSince reads an RFC 3339 time, a date (YYYY-MM-DD, UTC) or a
// duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time, a date (2006-01-02) or a duration like 24h", s)
}
