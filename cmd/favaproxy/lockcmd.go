package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/favaproxy/favaproxy/ledger"
	"github.com/favaproxy/favaproxy/lock"
)

func newLockCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lock --ledger PATH [--shared] [--timeout D] -- CMD [ARGS...]",
		Short: "Run a command while holding a ledger's lock, as serve takes it",
		Long: `lock runs CMD while holding the same lock that serve takes for the ledger:
exclusive by default (no proxy write or read runs meanwhile), shared with
--shared (proxy reads run, writes wait). It exits with CMD's status.

This is how cron importers, price fetchers and git pull cooperate with the
proxy. Before CMD runs, a write that a crash interrupted is settled, as
serve settles it (see favaproxy recover). The lock is the one lock.backend
configures: with flock, the ledger's lock_file when the ledger is in the
configuration (matched by path or slug), else .<name>.favaproxy.lock beside
it; with etcd, the ledger's key on etcd, always exclusive (etcd has no
shared mode, so --shared takes it exclusively). If the etcd lease is lost
while CMD runs (etcd unreachable for longer than lock.etcd.ttl), CMD gets
SIGTERM and lock exits 1.

SIGINT and SIGTERM are passed on to CMD. If lock itself is killed, CMD gets
SIGTERM on Linux and FreeBSD (the lock is gone with lock's process). Exit
status: CMD's; 128+N when CMD died of signal N; 1 when the lock was not
taken in time; 127 when CMD was not found.`,
		Args: usageArgs(cobra.MinimumNArgs(1)),
	}
	cmd.Flags().SetInterspersed(false) // flags after CMD are CMD's
	ledgerFlag := cmd.Flags().String("ledger", "", "ledger file, or the slug of a configured ledger (default: the only configured ledger)")
	shared := cmd.Flags().Bool("shared", false, "take the lock shared: proxy reads may run, writes wait")
	timeout := cmd.Flags().Duration("timeout", 0, "longest wait for the lock; 0 waits without limit")
	cmd.Flags().Lookup("timeout").DefValue = "lock_timeout"
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cfg, lc, err := ledgerFromFlag(cmd, *ledgerFlag)
		if err != nil {
			return err
		}
		wait := cfg.LockTimeout
		if cmd.Flags().Changed("timeout") {
			wait = *timeout
		}
		backend, err := lock.OpenBackend(cfg)
		if err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		defer backend.Close()
		l, err := backend.CrossProcess(lc)
		if err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		// A write a crash interrupted is settled before CMD sees the
		// ledger, as serve settles it before it writes.
		log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
		rctx, cancel := context.WithCancel(cmd.Context())
		if wait > 0 {
			rctx, cancel = context.WithTimeout(cmd.Context(), wait)
		}
		_, err = ledger.Recover(rctx, cfg, lc, l, log)
		cancel()
		if err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		return runLocked(cmd.Context(), l, *shared, wait, args)
	}
	return cmd
}

func sameFile(configured, given string, givenInfo os.FileInfo) bool {
	if fi, err := os.Stat(configured); err == nil && os.SameFile(fi, givenInfo) {
		return true
	}
	a, err1 := filepath.Abs(configured)
	b, err2 := filepath.Abs(given)
	return err1 == nil && err2 == nil && a == b
}

// runLocked takes l (shared or exclusive, waiting at most wait, or without
// limit when wait is 0), runs argv with stdio passed through and signals
// forwarded, then releases l. It returns an *exitError carrying argv's
// status.
func runLocked(ctx context.Context, l lock.Locker, shared bool, wait time.Duration, argv []string) error {
	// Catch SIGINT/SIGTERM from here on: while waiting they end the wait,
	// while CMD runs they are passed on to it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)

	path, err := exec.LookPath(argv[0])
	if err != nil {
		return &exitError{code: exitNotFound, msg: fmt.Sprintf("lock: %v", err)}
	}

	waitCtx, cancel := ctx, context.CancelFunc(func() {})
	if wait > 0 {
		waitCtx, cancel = context.WithTimeout(ctx, wait)
	}
	acquire, mode := l.Lock, "exclusive"
	if _, etcd := l.(*lock.Etcd); shared && !etcd {
		acquire, mode = l.RLock, "shared"
	}
	name := lockName(l)
	release, err := acquire(waitCtx)
	cancel()
	if err != nil {
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return &exitError{code: exitFailure, msg: fmt.Sprintf("lock: %s lock %s not acquired within %s", mode, name, wait)}
		case ctx.Err() != nil:
			return &exitError{code: exitFailure, msg: fmt.Sprintf("lock: interrupted while waiting for %s", name)}
		}
		return &exitError{code: exitFailure, msg: fmt.Sprintf("lock: %v", err)}
	}
	defer release()

	// Where the system has a parent-death signal, the child gets SIGTERM if
	// this process dies (even by SIGKILL): its lock dies with us, so it must
	// not carry on unprotected. Pdeathsig follows the thread that forked, so
	// that thread stays ours until the child is reaped.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := exec.Command(path, argv[1:]...)
	c.Args[0] = argv[0]
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
	c.SysProcAttr = lockChildAttr()
	if err := c.Start(); err != nil {
		code := exitFailure
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = exitNotFound
		}
		return &exitError{code: code, msg: fmt.Sprintf("lock: %v", err)}
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	var lost <-chan struct{} // nil: a lock that cannot be lost
	if lr, ok := l.(ledger.LossReporter); ok && mode == "exclusive" {
		lost = lr.Lost()
	}
	for {
		select {
		case sig := <-sigs:
			_ = c.Process.Signal(sig)
		case <-lost:
			lost = nil
			fmt.Fprintf(os.Stderr, "lock: the lease of %s was lost; stopping %s\n", name, argv[0])
			_ = c.Process.Signal(syscall.SIGTERM)
			<-done
			return &exitError{code: exitFailure, msg: fmt.Sprintf("lock: the lease of %s was lost while %s ran", name, argv[0])}
		case err := <-done:
			return exitStatus(err)
		}
	}
}

// lockName describes a lock for messages: its file or its etcd key.
func lockName(l lock.Locker) string {
	switch l := l.(type) {
	case *lock.File:
		return l.Path()
	case *lock.Etcd:
		return "etcd key " + l.Key()
	}
	return "ledger lock"
}

// exitStatus turns the result of Wait into favaproxy's exit: the child's
// code, or 128+N when it died of signal N.
func exitStatus(err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return &exitError{code: exitFailure, msg: fmt.Sprintf("lock: %v", err)}
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return &exitError{code: 128 + int(ws.Signal())}
	}
	return &exitError{code: ee.ExitCode()}
}
