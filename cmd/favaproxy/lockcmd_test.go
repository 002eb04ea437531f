package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/lock"
)

// ledgerFile writes an empty ledger in a fresh directory.
func ledgerFile(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "main.beancount")
	if err := os.WriteFile(path, []byte("option \"title\" \"Test\"\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// holdScript prints "locked" and holds until its stdin closes.
const holdScript = `echo locked; read x; exit 0`

// lockBlocked asserts this process cannot take path's lock within 100 ms.
func lockBlocked(tb testing.TB, path string, shared bool) {
	tb.Helper()
	l := lock.New(path)
	acquire := l.Lock
	if shared {
		acquire = l.RLock
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	release, err := acquire(ctx)
	if err == nil {
		release()
		tb.Fatalf("lock of %s taken, want it held by favaproxy lock", path)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		tb.Fatal(err)
	}
}

func TestLockExcludesLock(t *testing.T) {
	ledger := ledgerFile(t)
	holder := startUntil(t, "locked", "lock", "--ledger", ledger, "--", "sh", "-c", holdScript)

	r := favaproxy(t, nil, "lock", "--ledger", ledger, "--timeout", "200ms", "--", "true")
	if got, want := r.code, 1; got != want {
		t.Fatalf("second lock: exit %d, want %d; stderr %q", got, want, r.stderr)
	}
	if !strings.Contains(r.stderr, "not acquired within 200ms") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("second lock: stderr %q, want one line saying it timed out", r.stderr)
	}
	r = favaproxy(t, nil, "lock", "--ledger", ledger, "--shared", "--timeout", "200ms", "--", "true")
	if got, want := r.code, 1; got != want {
		t.Fatalf("shared lock during exclusive: exit %d, want %d", got, want)
	}
	// The lock is the one serve takes: the ledger's default lock file.
	lockBlocked(t, config.DefaultLockFile(ledger), true)

	holder.stdin.Close()
	if got, want := holder.wait(t), 0; got != want {
		t.Fatalf("holder: exit %d, want %d", got, want)
	}
	r = favaproxy(t, nil, "lock", "--ledger", ledger, "--timeout", "5s", "--", "true")
	if got, want := r.code, 0; got != want {
		t.Fatalf("lock after release: exit %d, want %d; stderr %q", got, want, r.stderr)
	}
}

func TestLockSharedShares(t *testing.T) {
	ledger := ledgerFile(t)
	holder := startUntil(t, "locked", "lock", "--ledger", ledger, "--shared", "--", "sh", "-c", holdScript)
	r := favaproxy(t, nil, "lock", "--ledger", ledger, "--shared", "--timeout", "5s", "--", "true")
	if got, want := r.code, 0; got != want {
		t.Fatalf("shared beside shared: exit %d, want %d; stderr %q", got, want, r.stderr)
	}
	r = favaproxy(t, nil, "lock", "--ledger", ledger, "--timeout", "200ms", "--", "true")
	if got, want := r.code, 1; got != want {
		t.Fatalf("exclusive beside shared: exit %d, want %d", got, want)
	}
	lockBlocked(t, config.DefaultLockFile(ledger), false)
	holder.stdin.Close()
	holder.wait(t)
}

func TestLockWaitsForThisProcess(t *testing.T) {
	// favaproxy lock waits while another process (this test, through
	// package lock as serve uses it) holds the lock, and runs once it is free.
	ledger := ledgerFile(t)
	l := lock.New(config.DefaultLockFile(ledger))
	release, err := l.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	waiter := start(t, "lock", "--ledger", ledger, "--", "echo", "ran")
	select {
	case line := <-waiter.lines:
		t.Fatalf("CMD said %q while another process holds the lock", line)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	waiter.expect(t, "ran")
	if got, want := waiter.wait(t), 0; got != want {
		t.Fatalf("exit %d, want %d", got, want)
	}
}

func TestLockExitStatus(t *testing.T) {
	ledger := ledgerFile(t)
	for name, tc := range map[string]struct {
		argv []string
		code int
	}{
		"Success":    {[]string{"true"}, 0},
		"Failure":    {[]string{"sh", "-c", "exit 7"}, 7},
		"Signalled":  {[]string{"sh", "-c", "kill -KILL $$"}, 128 + int(syscall.SIGKILL)},
		"NotFound":   {[]string{"favaproxy-no-such-command"}, 127},
		"FlagsOfCmd": {[]string{"sh", "-c", "exit 3", "--timeout"}, 3},
	} {
		t.Run(name, func(t *testing.T) {
			r := favaproxy(t, nil, append([]string{"lock", "--ledger", ledger, "--"}, tc.argv...)...)
			if got, want := r.code, tc.code; got != want {
				t.Fatalf("exit %d, want %d; stderr %q", got, want, r.stderr)
			}
		})
	}
	t.Run("StdioPassedThrough", func(t *testing.T) {
		r := favaproxy(t, nil, "lock", "--ledger", ledger, "--", "sh", "-c", "echo out; echo err >&2")
		if r.stdout != "out\n" || r.stderr != "err\n" {
			t.Fatalf("stdout %q stderr %q, want out/err", r.stdout, r.stderr)
		}
	})
	t.Run("MissingLedger", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "typo.beancount")
		r := favaproxy(t, nil, "lock", "--ledger", missing, "--", "true")
		if r.code != 1 || !strings.Contains(r.stderr, missing) {
			t.Fatalf("exit %d stderr %q, want 1 naming %s", r.code, r.stderr, missing)
		}
	})
}

func TestLockForwardsSignals(t *testing.T) {
	ledger := ledgerFile(t)
	script := `trap 'echo got-term; exit 3' TERM; echo locked; while :; do sleep 0.02; done`
	r := startUntil(t, "locked", "lock", "--ledger", ledger, "--", "sh", "-c", script)
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	r.expect(t, "got-term")
	if got, want := r.wait(t), 3; got != want {
		t.Fatalf("exit %d, want CMD's %d", got, want)
	}
}

func TestLockKilledHolderReplacedWithinOneSecond(t *testing.T) {
	ledger := ledgerFile(t)
	holder := startUntil(t, "locked", "lock", "--ledger", ledger, "--", "sh", "-c", "echo locked; exec sleep 60")
	if err := holder.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	r := favaproxy(t, nil, "lock", "--ledger", ledger, "--timeout", "1s", "--", "true")
	if got, want := r.code, 0; got != want {
		t.Fatalf("lock within 1s of kill -9 of the holder: exit %d, want %d; stderr %q", got, want, r.stderr)
	}
	// The holder's CMD must not run on without the lock: it gets SIGTERM
	// when favaproxy dies, which closes its stdout.
	select {
	case <-holder.done:
	case <-time.After(10 * time.Second):
		t.Fatal("CMD of the killed favaproxy lock is still running")
	}
}

func TestLockConfiguredLockFile(t *testing.T) {
	ledger := ledgerFile(t)
	custom := filepath.Join(t.TempDir(), "custom.lock")
	cfgFile := filepath.Join(t.TempDir(), "favaproxy.yaml")
	yaml := "ledgers:\n  - file: " + ledger + "\n    slug: books\n    lock_file: " + custom + "\n"
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{ledger, "books"} {
		t.Run(name, func(t *testing.T) {
			holder := startUntil(t, "locked", "lock", "--config", cfgFile, "--ledger", name, "--", "sh", "-c", holdScript)
			lockBlocked(t, custom, true)
			holder.stdin.Close()
			holder.wait(t)
		})
	}
}

func TestLockOnlyConfiguredLedger(t *testing.T) {
	ledger := ledgerFile(t)
	env := []string{"FAVAPROXY_LEDGERS=" + ledger}
	l := lock.New(config.DefaultLockFile(ledger))
	release, err := l.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	r := favaproxy(t, env, "lock", "--timeout", "200ms", "--", "true")
	if got, want := r.code, 1; got != want {
		t.Fatalf("lock of the only configured ledger while held: exit %d, want %d; stderr %q", got, want, r.stderr)
	}
	release()
	if r := favaproxy(t, env, "lock", "--timeout", "5s", "--", "true"); r.code != 0 {
		t.Fatalf("lock of the only configured ledger: exit %d, stderr %q", r.code, r.stderr)
	}
	other := ledgerFile(t)
	r = favaproxy(t, []string{"FAVAPROXY_LEDGERS=" + ledger + "," + other}, "lock", "--", "true")
	if got, want := r.code, 2; got != want {
		t.Fatalf("lock without --ledger among two: exit %d, want %d", got, want)
	}
}
