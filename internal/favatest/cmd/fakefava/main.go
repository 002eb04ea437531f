// Command fakefava serves Beancount ledgers like Fava does, including the
// ways Fava breaks, for tests and for trying favaproxy without Python:
//
//	fakefava --style 1.30 --listen 127.0.0.1:0 [--prefix P] [--reload-cost 130us] [--request-cost 400us]
//	         [--write-chunk N] [--write-pause D] [--write-delay D] [--trace FILE] LEDGER…
//
// Once it accepts connections it logs "msg=listening addr=HOST:PORT".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/favaproxy/favaproxy/internal/favatest"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, os.Args[1:]); err != nil {
		log.Error("fakefava", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, args []string) error {
	fs := flag.NewFlagSet("fakefava", flag.ContinueOnError)
	var opts favatest.Options
	listen := fs.String("listen", defaultListen(), "address to listen on (default from FAVA_HOST and FAVA_PORT, as Fava reads them)")
	fs.StringVar(&opts.Style, "style", favatest.Style130, "wire style: 1.27, 1.30 or 1.30.10")
	fs.StringVar(&opts.Prefix, "prefix", "", "URL prefix, like Fava's --prefix")
	reloadCost := fs.Duration("reload-cost", favatest.DefaultReloadCostPerTxn, "reload time per transaction (0 for none)")
	fs.IntVar(&opts.WriteChunk, "write-chunk", 0, "write files back in chunks of this many bytes (0: one write)")
	fs.DurationVar(&opts.WritePause, "write-pause", 0, "pause before each chunk of a chunked write")
	fs.DurationVar(&opts.WriteDelay, "write-delay", 0, "extra sleep inside every write")
	fs.StringVar(&opts.Trace, "trace", "", "append a JSON line per read and write to this file")
	fs.DurationVar(&opts.WatchDelay, "watch-delay", 0, "how long a change by another program goes unseen, as with Fava's watchfiles watcher (0: the polling watcher)")
	fs.DurationVar(&opts.RequestCost, "request-cost", 0, "CPU time every request burns, one request at a time, as Fava does under Python's interpreter lock (0 for none)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("usage: fakefava [flags] LEDGER…")
	}
	opts.ReloadCostPerTxn = *reloadCost
	if opts.ReloadCostPerTxn == 0 {
		opts.ReloadCostPerTxn = -1
	}
	srv, err := favatest.New(opts, fs.Args()...)
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "style", opts.Style, "slugs", srv.Slugs())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// defaultListen is FAVA_HOST:FAVA_PORT, as Fava takes them from its
// environment, each defaulting to Fava's own default.
func defaultListen() string {
	host, port := os.Getenv("FAVA_HOST"), os.Getenv("FAVA_PORT")
	if host == "" {
		host = "127.0.0.1"
	}
	if port == "" {
		port = "5000"
	}
	return net.JoinHostPort(host, port)
}
