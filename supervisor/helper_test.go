//go:build linux

package supervisor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/supervisor"
)

// The test binary plays every process of these tests, chosen by roleEnv:
//
//	child       a tiny Fava: writes its PID to SV_PIDFILE, listens on
//	            FAVA_HOST:FAVA_PORT and answers every request with its PID.
//	grandchild  sleeps; started by a child with SV_GRANDCHILD_PIDFILE.
//	parent      a small favaproxy: runs a supervisor over a child, prints
//	            "ready" and closes the supervisor on SIGTERM.
const roleEnv = "FAVAPROXY_SUPERVISOR_TEST_ROLE"

// TestHelperProcess is not a test: it is the body of the helper processes
// and returns at once in a normal test run.
func TestHelperProcess(t *testing.T) {
	switch os.Getenv(roleEnv) {
	case "":
		return
	case "child":
		os.Exit(helperChild())
	case "grandchild":
		time.Sleep(time.Hour)
		os.Exit(0)
	case "parent":
		os.Exit(helperParent())
	default:
		fmt.Fprintf(os.Stderr, "unknown role %q\n", os.Getenv(roleEnv))
		os.Exit(2)
	}
}

func helperChild() int {
	if f := os.Getenv("SV_COUNTFILE"); f != "" {
		fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err == nil {
			fmt.Fprintln(fh, os.Getpid())
			fh.Close()
		}
	}
	if f := os.Getenv("SV_PIDFILE"); f != "" {
		if err := writeFileAtomic(f, strconv.Itoa(os.Getpid())); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	if code := os.Getenv("SV_EXIT"); code != "" {
		n, _ := strconv.Atoi(code)
		return n
	}
	if os.Getenv("SV_IGNORE_TERM") != "" {
		signal.Ignore(syscall.SIGTERM)
	}
	if f := os.Getenv("SV_GRANDCHILD_PIDFILE"); f != "" {
		gc := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		gc.Env = append(os.Environ(), roleEnv+"=grandchild")
		if err := gc.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if err := writeFileAtomic(f, strconv.Itoa(gc.Process.Pid)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	if d, err := time.ParseDuration(os.Getenv("SV_DELAY")); err == nil {
		time.Sleep(d) // a slow Fava parsing its ledger before it listens
	}
	if os.Getenv("SV_NOLISTEN") != "" {
		time.Sleep(time.Hour)
		return 0
	}
	l, err := net.Listen("tcp", net.JoinHostPort(os.Getenv("FAVA_HOST"), os.Getenv("FAVA_PORT")))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	mark := os.Getenv("SV_MARK")
	err = http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Mark", mark)
		fmt.Fprintln(w, os.Getpid())
	}))
	fmt.Fprintln(os.Stderr, err)
	return 1
}

func helperParent() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	// The child's output goes to a file, not to the pipes the test reads:
	// an orphaned child holding them would hide the parent's exit.
	childLog, err := os.Create(os.Getenv("SV_CHILDLOG"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	s, err := supervisor.Start(context.Background(), supervisor.Options{
		Command: []string{os.Args[0], "-test.run=^TestHelperProcess$"},
		Env:     []string{roleEnv + "=child"},
		Stdout:  childLog,
		Stderr:  childLog,
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Printf("ready url=%s\n", s.URL())
	<-ctx.Done()
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func writeFileAtomic(name, data string) error {
	tmp := name + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}

// childOptions returns Options that run the test binary as a child with the
// given extra environment.
func childOptions(tb testing.TB, logs io.Writer, env ...string) supervisor.Options {
	tb.Helper()
	if logs == nil {
		logs = io.Discard
	}
	return supervisor.Options{
		Command:        []string{os.Args[0], "-test.run=^TestHelperProcess$"},
		Env:            append([]string{roleEnv + "=child"}, env...),
		Logger:         slog.New(slog.NewTextHandler(logs, nil)),
		ReadyTimeout:   20 * time.Second,
		RestartBackoff: supervisor.Backoff{Initial: 100 * time.Millisecond, Max: time.Second},
		StopGrace:      5 * time.Second,
	}
}

// start runs Start and closes the supervisor when the test ends.
func start(tb testing.TB, o supervisor.Options) *supervisor.Supervisor {
	tb.Helper()
	s, err := supervisor.Start(context.Background(), o)
	if err != nil {
		tb.Fatalf("Start: %v", err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// get fetches url and returns the PID the child answered with.
func get(tb testing.TB, url string) (int, http.Header, error) {
	tb.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url + "/")
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, resp.Header, err
}

// readPID waits up to 10s for a PID file and returns its PID, registering a
// cleanup that kills that process if it outlives the test.
func readPID(tb testing.TB, file string) int {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(file)
		if err == nil {
			pid, err := strconv.Atoi(string(b))
			if err != nil {
				tb.Fatalf("pid file %s: %v", file, err)
			}
			tb.Cleanup(func() { killIfAlive(pid) })
			return pid
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no pid file %s after 10s", file)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dead reports whether pid is gone: no such process, or a zombie that its
// new parent (init or a subreaper) has not reaped yet.
func dead(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	// The state follows the command name, which is in parentheses and may
	// itself hold ") ".
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	return b[i+2] == 'Z' || b[i+2] == 'X'
}

// waitDead polls until pid is dead or d passes.
func waitDead(tb testing.TB, pid int, d time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !dead(pid) {
		if time.Now().After(deadline) {
			tb.Fatalf("process %d still alive after %s", pid, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// killIfAlive kills a process this test started (directly or through the
// supervisor) that is still around.
func killIfAlive(pid int) {
	if !dead(pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
