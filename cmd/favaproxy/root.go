package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/favaproxy/favaproxy/config"
)

// Exit statuses of favaproxy itself; `lock` also passes on its command's.
const (
	exitOK       = 0
	exitFailure  = 1
	exitUsage    = 2
	exitNotFound = 127 // the command of `lock` was not found, as in sh
)

// exitError ends the process with code after printing msg (if any) on
// stderr as one line.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// usageError marks a command-line mistake (exit 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// run executes the favaproxy command line args and returns the exit status.
// ctx ends on SIGINT/SIGTERM.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintf(stderr, "favaproxy: %s\n", ee.msg)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "favaproxy: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		return exitUsage
	}
	return exitFailure
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "favaproxy",
		Short: "Serialize every write to Beancount ledgers served by Fava",
		Long: `favaproxy sits in front of Fava and serializes every mutating request to a
ledger across users, goroutines and processes; everything else passes through.

Configuration comes from, in rising precedence: defaults, the YAML file
(--config or $FAVAPROXY_CONFIG), FAVAPROXY_* environment variables (every key,
upper-cased, "." as "_": FAVAPROXY_IDENTITY_HEADER), and flags.
Lists in the environment are comma-separated: FAVAPROXY_LEDGERS takes
PATH or SLUG=PATH items, FAVAPROXY_AUTH_TOKENS USER:SHA256 items.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return &usageError{fmt.Errorf("unknown command %q; see favaproxy --help", args[0])}
			}
			_ = cmd.Help()
			return &exitError{code: exitUsage}
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.PersistentFlags().String("config", "", "YAML configuration file (default $FAVAPROXY_CONFIG)")
	root.AddCommand(newServeCmd(), newRunCmd(), newHealthCmd(), newLockCmd(), newScanCmd(), newAuditCmd(), newRecoverCmd(), newVerifyCmd(), newVersionCmd())
	return root
}

// usageArgs makes the errors of an argument check usage errors (exit 2).
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &usageError{err}
		}
		return nil
	}
}

// configFile returns --config of cmd.
func configFile(cmd *cobra.Command) string {
	s, _ := cmd.Flags().GetString("config")
	return s
}

// loadValidConfig loads the configuration for cmd and validates it,
// reporting every problem, one per line.
func loadValidConfig(cmd *cobra.Command) (config.Config, error) {
	cfg, err := loadConfig(cmd.Flags(), configFile(cmd))
	if err != nil {
		return config.Config{}, err
	}
	if err := cfg.Validate(); err != nil {
		return config.Config{}, &exitError{code: exitFailure,
			msg: "invalid configuration:\n  " + strings.ReplaceAll(err.Error(), "\n", "\n  ")}
	}
	return cfg, nil
}

// newLogger returns the logger configured by l, writing to w.
func newLogger(l config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.Level)) // validated: debug, info, warn, error
	opts := &slog.HandlerOptions{Level: level}
	if l.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
