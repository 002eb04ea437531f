package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/favaproxy/favaproxy/supervisor"
)

func newRunCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run [serve flags] -- FAVA-COMMAND [ARGS...]",
		Short: "Run Fava as a child on a private port and serve it through the proxy",
		Long: `run starts FAVA-COMMAND (for example "fava ledger.beancount") with FAVA_HOST
and FAVA_PORT set to a free port on 127.0.0.1 that favaproxy picks, waits
until it answers, and serves it like "serve" does, with every serve flag.
Fava is restarted if it dies, and dies with favaproxy: on SIGINT/SIGTERM
after the writes in flight have finished, and on Linux even when favaproxy
is killed with SIGKILL. Do not give Fava -H/--host or -p/--port: they would
override the port favaproxy picked.`,
		Args: usageArgs(cobra.MinimumNArgs(1)),
	}
	addConfigFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		dash := cmd.ArgsLenAtDash()
		if dash < 0 || dash >= len(args) {
			return &usageError{fmt.Errorf("run needs the Fava command after --")}
		}
		if dash > 0 {
			return &usageError{fmt.Errorf("unexpected arguments before --: %q", args[:dash])}
		}
		fava := args[dash:]
		prefix, err := favaCommandPrefix(fava)
		if err != nil {
			return &usageError{err}
		}
		cfg, err := loadValidConfig(cmd)
		if err != nil {
			return err
		}
		log := newLogger(cfg.Log, cmd.ErrOrStderr())
		// Fava outlives the signal that stops favaproxy until the proxy has
		// drained its writes; Close below stops it.
		sup, err := supervisor.Start(context.WithoutCancel(cmd.Context()), supervisor.Options{
			Command: fava,
			Logger:  log, // the supervisor names the child in its lines
			Stdout:  cmd.ErrOrStderr(),
			Stderr:  cmd.ErrOrStderr(),
		})
		if err != nil {
			return fmt.Errorf("start fava: %w", err)
		}
		defer func() {
			if err := sup.Close(); err != nil {
				log.Warn("stop fava", "err", err)
			}
		}()
		// Only the upstream changed since validation; proxy.New parses and
		// checks it.
		cfg.Upstream = sup.URL() + prefix
		return serveProxy(cmd, cfg, log, map[string]func(context.Context) error{
			"fava": func(context.Context) error { return sup.Ready() },
		}, sup.Restarts)
	}
	return cmd
}

// favaCommandPrefix returns the path prefix Fava is told to serve under
// (--prefix P or --prefix=P), and refuses host and port options, which would
// take precedence over FAVA_HOST and FAVA_PORT.
func favaCommandPrefix(args []string) (string, error) {
	var prefix string
	for i := 1; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := strings.Cut(a, "=")
		switch {
		case a == "--":
			return prefix, nil
		case name == "-H" || name == "--host" || name == "-p" || name == "--port" ||
			strings.HasPrefix(a, "-H") && len(a) > 2 || strings.HasPrefix(a, "-p") && len(a) > 2:
			return "", fmt.Errorf("do not give Fava %s: favaproxy sets FAVA_HOST and FAVA_PORT", name)
		case name == "--prefix" && hasValue:
			prefix = value
		case name == "--prefix" && i+1 < len(args):
			i++
			prefix = args[i]
		}
	}
	if prefix != "" && !strings.HasPrefix(prefix, "/") {
		prefix = "/" + prefix
	}
	return strings.TrimSuffix(prefix, "/"), nil
}
