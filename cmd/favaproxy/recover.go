package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/ledger"
	"github.com/favaproxy/favaproxy/lock"
)

func newRecoverCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "recover --ledger PATH [--json]",
		Short: "Settle a write that a crash interrupted",
		Long: `recover looks for a write to the ledger that a crash interrupted (a hot
rollback in the ledger's state directory) and settles it as serve would,
holding the ledger's lock: a complete write is kept, anything else is put
back from the pre-images saved before it, keeping what it replaces beside
them. serve, run and lock do this by themselves; recover does it by hand
and says what it found. Exit status 0 when there was nothing to do or the
write was settled, 1 otherwise (for example while the interrupted request
may still be running at Fava).`,
		Args: usageArgs(cobra.NoArgs),
	}
	ledgerFlag := cmd.Flags().String("ledger", "", "ledger file, or the slug of a configured ledger (default: the only configured ledger)")
	asJSON := cmd.Flags().Bool("json", false, "print the report as JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg, lc, err := ledgerFromFlag(cmd, *ledgerFlag)
		if err != nil {
			return err
		}
		log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
		backend, err := lock.OpenBackend(cfg)
		if err != nil {
			return err
		}
		defer backend.Close()
		lk, err := backend.CrossProcess(lc)
		if err != nil {
			return err
		}
		rec, err := ledger.Recover(cmd.Context(), cfg, lc, lk, log)
		out := cmd.OutOrStdout()
		if *asJSON {
			_ = json.NewEncoder(out).Encode(rec)
		} else {
			printRecovery(out, lc.File, rec)
		}
		if err != nil {
			return err
		}
		return nil
	}
	return cmd
}

func printRecovery(w io.Writer, file string, rec ledger.Recovery) {
	switch {
	case !rec.Hot:
		fmt.Fprintf(w, "%s: no interrupted write\n", file)
	case rec.Kept:
		fmt.Fprintf(w, "%s: kept a complete %s write begun %s by process %d\n", file, rec.Kind, rec.Started.Format("2006-01-02T15:04:05Z07:00"), rec.PID)
	case rec.Settled:
		fmt.Fprintf(w, "%s: rolled back a %s write begun %s by process %d; restored %v\n", file, rec.Kind, rec.Started.Format("2006-01-02T15:04:05Z07:00"), rec.PID, rec.Restored)
	default:
		fmt.Fprintf(w, "%s: found a %s write begun %s by process %d, not settled\n", file, rec.Kind, rec.Started.Format("2006-01-02T15:04:05Z07:00"), rec.PID)
	}
}

func newVerifyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify --ledger PATH [--json]",
		Short: "Check that a ledger's files read cleanly and no write is left interrupted",
		Long: `verify checks a ledger without changing it: every file of it (the main file
and its includes) can be read and has no line Beancount would reject, and no
write is left interrupted by a crash. It prints one line per problem. Exit
status 0 when there is none, 1 otherwise: for a cron job or a readiness
probe. bean-check remains the full check of a ledger's meaning.`,
		Args: usageArgs(cobra.NoArgs),
	}
	ledgerFlag := cmd.Flags().String("ledger", "", "ledger file, or the slug of a configured ledger (default: the only configured ledger)")
	asJSON := cmd.Flags().Bool("json", false, "print one JSON object per problem")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg, lc, err := ledgerFromFlag(cmd, *ledgerFlag)
		if err != nil {
			return err
		}
		problems, err := ledger.Verify(lc, cfg.Idempotency.MetaKey)
		if err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		enc := json.NewEncoder(out)
		for _, p := range problems {
			switch {
			case *asJSON:
				_ = enc.Encode(p)
			case p.Line > 0:
				fmt.Fprintf(out, "%s:%d: %s\n", p.File, p.Line, p.What)
			default:
				fmt.Fprintf(out, "%s: %s\n", p.File, p.What)
			}
		}
		if len(problems) > 0 {
			return &exitError{code: exitFailure}
		}
		if !*asJSON {
			fmt.Fprintf(out, "%s: ok\n", lc.File)
		}
		return nil
	}
	return cmd
}

// ledgerFromFlag loads the configuration and returns the ledger a --ledger
// flag names (a path, or the slug of a configured ledger; empty for the
// only configured one): the configured ledger when it is one, else the
// file with default state directory and lock file.
func ledgerFromFlag(cmd *cobra.Command, flag string) (config.Config, config.Ledger, error) {
	cfg, err := loadConfig(nil, configFile(cmd))
	if err != nil {
		return cfg, config.Ledger{}, err
	}
	if flag == "" {
		if len(cfg.Ledgers) != 1 {
			return cfg, config.Ledger{}, &usageError{fmt.Errorf("--ledger is required (%d ledgers configured)", len(cfg.Ledgers))}
		}
		return cfg, cfg.Ledgers[0], nil
	}
	fi, statErr := os.Stat(flag)
	for _, l := range cfg.Ledgers {
		if l.Slug != "" && l.Slug == flag && statErr != nil {
			return cfg, l, nil
		}
		if statErr == nil && sameFile(l.File, flag, fi) {
			return cfg, l, nil
		}
	}
	if statErr != nil {
		return cfg, config.Ledger{}, fmt.Errorf("ledger: %w", statErr)
	}
	if fi.IsDir() {
		return cfg, config.Ledger{}, fmt.Errorf("ledger: %s is a directory", flag)
	}
	return cfg, config.Ledger{File: flag}, nil
}
