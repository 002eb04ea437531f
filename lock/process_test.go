package lock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/lock"
)

// The child processes of these tests are this test binary re-executed with
// -test.run=TestHelperProcess and FAVAPROXY_LOCK_HELPER naming what to do.
const (
	envMode    = "FAVAPROXY_LOCK_HELPER"
	envPath    = "FAVAPROXY_LOCK_PATH"
	envCounter = "FAVAPROXY_LOCK_COUNTER"
	envN       = "FAVAPROXY_LOCK_N"
)

// TestHelperProcess is not a test: it is the child process of the tests
// below. Modes:
//
//	exclusive, shared: take the lock, print "locked", hold it until stdin closes.
//	readers: run overlapping readers, print "reading", stop when stdin closes.
//	count, count-locked: print "ready", wait for a line on stdin, then
//	  increment the counter file N times (under the exclusive lock for
//	  count-locked), print "done".
//	rewrite: print "ready", wait for a line on stdin, then N times rewrite
//	  the counter file in place, in two halves with a pause between, under
//	  the exclusive lock; print "done".
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(envMode)
	if mode == "" {
		t.Skip("child process of the cross-process tests")
	}
	l := lock.New(os.Getenv(envPath))
	ctx := context.Background()
	switch mode {
	case "exclusive", "shared":
		acquire := l.Lock
		if mode == "shared" {
			acquire = l.RLock
		}
		release, err := acquire(ctx)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println("locked")
		io.Copy(io.Discard, os.Stdin)
		release()
	case "readers":
		// Readers that overlap without pause: the process never drops its
		// shared file lock unless it makes way for a waiting writer.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				time.Sleep(time.Duration(i) * 2 * time.Millisecond) // staggered: some reader always holds
				for {
					select {
					case <-stop:
						return
					default:
					}
					release, err := l.RLock(ctx)
					if err != nil {
						fmt.Fprintln(os.Stderr, err)
						os.Exit(2)
					}
					time.Sleep(8 * time.Millisecond)
					release()
				}
			})
		}
		time.Sleep(10 * time.Millisecond) // all four running
		fmt.Println("reading")
		io.Copy(io.Discard, os.Stdin)
		close(stop)
		wg.Wait()
	case "count", "count-locked":
		n, _ := strconv.Atoi(os.Getenv(envN))
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
		for range n {
			if err := increment(ctx, os.Getenv(envCounter), l, mode == "count-locked"); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
		fmt.Println("done")
	case "rewrite":
		n, _ := strconv.Atoi(os.Getenv(envN))
		fmt.Println("ready")
		bufio.NewReader(os.Stdin).ReadString('\n')
		for i := range n {
			if err := rewrite(ctx, os.Getenv(envCounter), l, byte('a'+i%26)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
		}
		fmt.Println("done")
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", mode)
		os.Exit(2)
	}
	os.Exit(0)
}

// child is a running TestHelperProcess.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
}

// startChild runs TestHelperProcess in mode and waits for its first line
// (want). Cleanup kills it.
func startChild(tb testing.TB, mode, lockPath string, env ...string) *child {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), envMode+"="+mode, envPath+"="+lockPath)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	c := &child{cmd: cmd, stdin: stdin, lines: make(chan string, 1024), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines) // before done: a line said before exiting is never missed
		cmd.Wait()
		close(c.done)
	}()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
	})
	return c
}

// expect waits up to 20 s for the child's next line and checks it.
func (c *child) expect(tb testing.TB, want string) {
	tb.Helper()
	select {
	case got, ok := <-c.lines:
		if !ok {
			tb.Fatalf("child exited before saying %q", want)
		}
		if got != want {
			tb.Fatalf("child said %q, want %q", got, want)
		}
	case <-time.After(20 * time.Second):
		tb.Fatalf("child did not say %q within 20s", want)
	}
}

// stop closes the child's stdin (a holder releases and exits) and waits.
func (c *child) stop(tb testing.TB) {
	tb.Helper()
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		tb.Fatal("child did not exit")
	}
}

// blocked asserts that acquire cannot get the lock within a short wait.
func blocked(tb testing.TB, what string, acquire func(context.Context) (func(), error)) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	release, err := acquire(ctx)
	if err == nil {
		release()
		tb.Fatalf("%s: acquired, want it blocked", what)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		tb.Fatalf("%s: err = %v, want DeadlineExceeded", what, err)
	}
}

func lockPath(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(tb.TempDir(), ".main.beancount.favaproxy.lock")
}

func TestCrossProcess(t *testing.T) {
	t.Run("ExclusiveExcludesBoth", func(t *testing.T) {
		path := lockPath(t)
		c := startChild(t, "exclusive", path)
		c.expect(t, "locked")
		l := lock.New(path)
		blocked(t, "Lock", l.Lock)
		blocked(t, "RLock", l.RLock)
		c.stop(t)
		mustLock(t, l.Lock)()
	})
	t.Run("SharedShares", func(t *testing.T) {
		path := lockPath(t)
		c := startChild(t, "shared", path)
		c.expect(t, "locked")
		l := lock.New(path)
		r := mustLock(t, l.RLock)
		blocked(t, "Lock", l.Lock)
		r()
		c.stop(t)
		mustLock(t, l.Lock)()
	})
	t.Run("ParentExcludesChild", func(t *testing.T) {
		path := lockPath(t)
		l := lock.New(path)
		release := mustLock(t, l.RLock)
		c := startChild(t, "exclusive", path)
		select {
		case line := <-c.lines:
			t.Fatalf("child said %q while this process holds the shared lock", line)
		case <-time.After(200 * time.Millisecond):
		}
		release()
		c.expect(t, "locked")
		c.stop(t)
	})
}

func TestKilledHolderReplacedWithinOneSecond(t *testing.T) {
	for _, mode := range []string{"exclusive", "shared"} {
		t.Run(mode, func(t *testing.T) {
			path := lockPath(t)
			c := startChild(t, mode, path)
			c.expect(t, "locked")
			l := lock.New(path)
			blocked(t, "Lock", l.Lock)

			// A waiter already polling when the holder dies, and one that
			// starts right after: both must get in within 1 s of the kill.
			waiting := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				release, err := l.Lock(ctx)
				if err == nil {
					release()
				}
				waiting <- err
			}()
			if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			release, err := l.Lock(ctx)
			if err != nil {
				t.Fatalf("Lock within 1s of SIGKILL of the holder: %v", err)
			}
			release()
			if err := <-waiting; err != nil {
				t.Fatalf("waiter polling during the kill: %v", err)
			}
		})
	}
}

// increment does one read-modify-write of the counter file, under l's
// exclusive lock if locked. An unreadable counter (torn by a concurrent
// writer) counts as 0, which is one more lost update.
func increment(ctx context.Context, path string, l *lock.File, locked bool) error {
	if locked {
		release, err := l.Lock(ctx)
		if err != nil {
			return err
		}
		defer release()
	}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		if locked && len(b) > 0 {
			return fmt.Errorf("counter %q torn under the lock: %w", b, err)
		}
		n = 0
	}
	runtime.Gosched() // what a real writer does between reading and writing: anything
	return os.WriteFile(path, []byte(strconv.Itoa(n+1)+"\n"), 0o644)
}

// countRun has goroutines of this process and one child process each
// increment a shared counter file, and returns the final count and the
// number of increments made.
func countRun(tb testing.TB, locked bool) (got, want int) {
	tb.Helper()
	const goroutines, perGoroutine, inChild = 4, 150, 300
	dir := tb.TempDir()
	path := filepath.Join(dir, ".counter.lock")
	counter := filepath.Join(dir, "counter")
	if err := os.WriteFile(counter, []byte("0\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	mode := "count"
	if locked {
		mode = "count-locked"
	}
	c := startChild(tb, mode, path, envCounter+"="+counter, envN+"="+strconv.Itoa(inChild))
	c.expect(tb, "ready")

	l := lock.New(path)
	start := make(chan struct{})
	errs := make(chan error, goroutines)
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			<-start
			for range perGoroutine {
				if err := increment(context.Background(), counter, l, locked); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	io.WriteString(c.stdin, "go\n")
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	c.expect(tb, "done")
	c.stop(tb)
	b, err := os.ReadFile(counter)
	if err != nil {
		tb.Fatal(err)
	}
	got, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	return got, goroutines*perGoroutine + inChild
}

func TestLostUpdate(t *testing.T) {
	t.Run("WithoutLockLoses", func(t *testing.T) {
		// Shows the test can see a loss at all. Interleaving is up to the
		// scheduler, so a run without a loss is retried a few times.
		for attempt := 1; ; attempt++ {
			got, want := countRun(t, false)
			if got < want {
				t.Logf("without the lock: counter %d of %d increments (%d lost, attempt %d)", got, want, want-got, attempt)
				return
			}
			if attempt == 5 {
				t.Fatalf("no update lost in %d unlocked runs: the test cannot tell the lock works", attempt)
			}
		}
	})
	t.Run("WithLockExact", func(t *testing.T) {
		got, want := countRun(t, true)
		if got != want {
			t.Fatalf("with the lock: counter = %d, want %d", got, want)
		}
	})
}

func TestWriterNotStarvedByOtherProcessReaders(t *testing.T) {
	path := lockPath(t)
	c := startChild(t, "readers", path)
	c.expect(t, "reading")
	l := lock.New(path)
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		start := time.Now()
		release, err := l.Lock(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Lock while another process reads without pause: %v", err)
		}
		t.Logf("writer got in after %s", time.Since(start).Round(time.Millisecond))
		release()
	}
	c.stop(t)
}

func TestWriterInOtherProcessBlocksNewReaders(t *testing.T) {
	path := lockPath(t)
	l := lock.New(path)
	held := mustLock(t, l.RLock)
	c := startChild(t, "exclusive", path) // waits for held, at the turnstile

	// Once the child waits, a new reader here must wait too.
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		release, err := l.RLock(ctx)
		cancel()
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatal(err)
			}
			break
		}
		release()
		if time.Now().After(deadline) {
			t.Fatal("new readers still get in while a writer in another process waits")
		}
		time.Sleep(5 * time.Millisecond)
	}
	held()
	c.expect(t, "locked")
	blocked(t, "RLock", l.RLock)
	c.stop(t)
	mustLock(t, l.RLock)()
}
