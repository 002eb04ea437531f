package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/ledger"
	"github.com/favaproxy/favaproxy/lock"
	"github.com/favaproxy/favaproxy/proxy"
)

// The proxy takes every ledger's lock through its own tiny interface.
var (
	_ ledger.Locker     = (*lock.File)(nil)
	_ ledger.TryRLocker = (*lock.File)(nil)
)

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve Fava through the proxy",
		Long: `serve listens on --listen and passes every request through to Fava at
--upstream. Writes to a ledger are serialized across users, goroutines and
processes under the ledger's lock file, the same lock "favaproxy lock" takes.

It logs "listening addr=HOST:PORT" once it accepts connections and shuts
down gracefully on SIGINT or SIGTERM within shutdown_grace.`,
		Args: usageArgs(cobra.NoArgs),
	}
	addConfigFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := loadValidConfig(cmd)
		if err != nil {
			return err
		}
		return serveProxy(cmd, cfg, newLogger(cfg.Log, cmd.ErrOrStderr()), nil, nil)
	}
	return cmd
}

// serveProxy runs the proxy for cfg until cmd's context ends, with extra
// readiness checks, if any, on /readyz, and the count of restarts of a Fava
// it runs itself, if any.
func serveProxy(cmd *cobra.Command, cfg config.Config, log *slog.Logger, checks map[string]func(context.Context) error, restarts func() int) error {
	backend, err := lock.OpenBackend(cfg)
	if err != nil {
		return err
	}
	defer backend.Close()
	if cfg.Lock.Backend == config.BackendNone {
		log.Warn("lock.backend none: the ledger lock excludes no other process; only this favaproxy may write the ledgers")
	}
	srv, err := proxy.New(cfg, proxy.Options{
		UpstreamRestarts: restarts,
		Logger:           log,
		NewLocker: func(l config.Ledger, hooks lock.EtcdHooks) (ledger.Locker, error) {
			return backend.Locker(l, hooks), nil
		},
		ReadyChecks: checks,
	})
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	if err := srv.Serve(cmd.Context()); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
