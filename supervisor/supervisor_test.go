//go:build linux

package supervisor_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/supervisor"
)

func TestStartWaitsUntilChildAnswers(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pid")
	// The child sleeps before it listens, like Fava parsing a ledger: if
	// Start returned early, the first request would be refused.
	s := start(t, childOptions(t, nil, "SV_DELAY=300ms", "SV_PIDFILE="+pidfile, "SV_MARK=from-env"))
	childPID := readPID(t, pidfile)

	if !strings.HasPrefix(s.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL=%q, want http://127.0.0.1:PORT", s.URL())
	}
	if err := s.Ready(); err != nil {
		t.Fatalf("Ready()=%v, want nil", err)
	}
	pid, h, err := get(t, s.URL())
	if err != nil {
		t.Fatalf("GET right after Start: %v", err)
	}
	if got, want := pid, childPID; got != want {
		t.Fatalf("answered by pid %d, want the child %d", got, want)
	}
	if got, want := h.Get("X-Mark"), "from-env"; got != want {
		t.Fatalf("child saw SV_MARK=%q, want %q (Options.Env not passed)", got, want)
	}
}

func TestRestartsChildThatDies(t *testing.T) {
	logs := new(syncBuffer)
	pidfile := filepath.Join(t.TempDir(), "pid")
	s := start(t, childOptions(t, logs, "SV_PIDFILE="+pidfile))
	first, _, err := get(t, s.URL())
	if err != nil {
		t.Fatal(err)
	}
	readPID(t, pidfile)
	url := s.URL()

	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Not ready from the exit until the new child answers: at least the
	// restart delay of 100ms.
	deadline := time.Now().Add(10 * time.Second)
	for s.Ready() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Ready() stayed nil after the child was killed")
		}
		time.Sleep(time.Millisecond)
	}
	if err := s.Ready(); !strings.Contains(err.Error(), "exited") {
		t.Fatalf("Ready()=%v, want it to say the child exited", err)
	}
	for s.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready 10s after the child was killed: %v\n%s", s.Ready(), logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	second, _, err := get(t, s.URL())
	if err != nil {
		t.Fatalf("GET after restart: %v", err)
	}
	t.Cleanup(func() { killIfAlive(second) })
	if second == first {
		t.Fatalf("answered by pid %d again, want a new child", second)
	}
	if got, want := s.URL(), url; got != want {
		t.Fatalf("URL after restart=%q, want %q", got, want)
	}
	if got, want := s.Restarts(), 1; got != want {
		t.Fatalf("Restarts()=%d, want %d", got, want)
	}
	if !dead(first) {
		t.Fatalf("killed child %d still alive", first)
	}
	if !logged(logs.String(), `msg="child exited"`, " pid="+strconv.Itoa(first)+" ", `status="signal: killed"`) {
		t.Fatalf("log does not record the exit with its status:\n%s", logs)
	}
}

func TestCloseStopsChild(t *testing.T) {
	t.Run("Graceful", func(t *testing.T) {
		dir := t.TempDir()
		s := start(t, childOptions(t, nil, "SV_PIDFILE="+filepath.Join(dir, "pid"), "SV_GRANDCHILD_PIDFILE="+filepath.Join(dir, "gc")))
		child := readPID(t, filepath.Join(dir, "pid"))
		grandchild := readPID(t, filepath.Join(dir, "gc"))
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if !dead(child) {
			t.Fatalf("child %d alive after Close returned", child)
		}
		waitDead(t, grandchild, 5*time.Second) // reparented to init, which reaps it
		if got, want := s.Ready(), supervisor.ErrStopped; !errors.Is(got, want) {
			t.Fatalf("Ready() after Close=%v, want %v", got, want)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
	t.Run("KilledAfterGrace", func(t *testing.T) {
		pidfile := filepath.Join(t.TempDir(), "pid")
		o := childOptions(t, nil, "SV_PIDFILE="+pidfile, "SV_IGNORE_TERM=1")
		o.StopGrace = 200 * time.Millisecond
		s := start(t, o)
		child := readPID(t, pidfile)
		err := s.Close()
		if err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("Close()=%v, want an error saying the child was killed", err)
		}
		if !dead(child) {
			t.Fatalf("child %d alive after Close returned", child)
		}
	})
	t.Run("ContextCancelled", func(t *testing.T) {
		pidfile := filepath.Join(t.TempDir(), "pid")
		ctx, cancel := context.WithCancel(context.Background())
		s, err := supervisor.Start(ctx, childOptions(t, nil, "SV_PIDFILE="+pidfile))
		if err != nil {
			t.Fatal(err)
		}
		child := readPID(t, pidfile)
		cancel()
		waitDead(t, child, 10*time.Second)
		if err := s.Close(); err != nil {
			t.Fatalf("Close after cancel: %v", err)
		}
		if got, want := s.Ready(), supervisor.ErrStopped; !errors.Is(got, want) {
			t.Fatalf("Ready()=%v, want %v", got, want)
		}
	})
}

func TestStartFails(t *testing.T) {
	t.Run("ChildExitsAtOnce", func(t *testing.T) {
		count := filepath.Join(t.TempDir(), "count")
		o := childOptions(t, nil, "SV_EXIT=3", "SV_COUNTFILE="+count)
		o.ReadyTimeout = time.Minute
		began := time.Now()
		_, err := supervisor.Start(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "exit status 3") {
			t.Fatalf("Start()=%v, want an error with the exit status", err)
		}
		if elapsed := time.Since(began); elapsed > 30*time.Second {
			t.Fatalf("Start took %s to give up on a child that exits at once", elapsed)
		}
		b, _ := os.ReadFile(count)
		if got, want := strings.Count(string(b), "\n"), 3; got != want {
			t.Fatalf("child started %d times, want %d (each on a new port)", got, want)
		}
	})
	t.Run("CommandNotFound", func(t *testing.T) {
		o := childOptions(t, nil)
		o.Command = []string{filepath.Join(t.TempDir(), "no-such-fava")}
		if _, err := supervisor.Start(context.Background(), o); err == nil {
			t.Fatal("Start of a missing command succeeded")
		}
	})
	t.Run("EmptyCommand", func(t *testing.T) {
		if _, err := supervisor.Start(context.Background(), supervisor.Options{}); err == nil {
			t.Fatal("Start with no command succeeded")
		}
	})
	t.Run("NeverAnswers", func(t *testing.T) {
		pidfile := filepath.Join(t.TempDir(), "pid")
		o := childOptions(t, nil, "SV_NOLISTEN=1", "SV_PIDFILE="+pidfile)
		o.ReadyTimeout = 500 * time.Millisecond
		_, err := supervisor.Start(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "did not answer") {
			t.Fatalf("Start()=%v, want a readiness timeout", err)
		}
		if child := readPID(t, pidfile); !dead(child) {
			t.Fatalf("child %d left running after Start failed", child)
		}
	})
}

// TestChildSurvivesExitOfStartingThread pins the parent-death-signal
// pitfall: the kernel signals the child when the *thread* that forked it
// exits. Start is called from a goroutine that locks its thread and then
// returns, so the runtime ends that thread; the child must live on.
func TestChildSurvivesExitOfStartingThread(t *testing.T) {
	pidfile := filepath.Join(t.TempDir(), "pid")
	type result struct {
		s   *supervisor.Supervisor
		err error
		tid int
	}
	var r result
	release := make(chan struct{})
	defer close(release)
	for range 10 {
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
			if tid := syscall.Gettid(); tid == os.Getpid() {
				// The runtime never ends the main thread. Keep it busy so
				// that the next try runs on another thread.
				ch <- result{tid: tid}
				<-release
				runtime.UnlockOSThread()
				return
			}
			s, err := supervisor.Start(context.Background(), childOptions(t, nil, "SV_PIDFILE="+pidfile))
			ch <- result{s, err, syscall.Gettid()}
		}()
		if r = <-ch; r.tid != os.Getpid() {
			break
		}
	}
	if r.tid == os.Getpid() {
		t.Fatal("Start always ran on the main thread")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.s.Close() })
	child := readPID(t, pidfile)

	task := fmt.Sprintf("/proc/self/task/%d", r.tid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(task); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d still exists 10s after its locked goroutine returned", r.tid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A SIGKILL sent on the thread's exit would have marked the child as
	// exiting before it could answer again.
	pid, _, err := get(t, r.s.URL())
	if err != nil {
		t.Fatalf("child gone after the starting thread exited: %v", err)
	}
	if got, want := pid, child; got != want {
		t.Fatalf("answered by pid %d, want the first child %d (it was restarted)", got, want)
	}
}

// TestChildDiesWithParent runs a small favaproxy (the test binary as
// "parent") that supervises a child, kills the parent and checks that the
// child goes too.
func TestChildDiesWithParent(t *testing.T) {
	for name, sig := range map[string]syscall.Signal{"SIGTERM": syscall.SIGTERM, "SIGKILL": syscall.SIGKILL} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			parent := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
			parent.Env = append(os.Environ(), roleEnv+"=parent",
				"SV_PIDFILE="+filepath.Join(dir, "pid"), "SV_CHILDLOG="+filepath.Join(dir, "child.log"))
			var stderr syncBuffer
			parent.Stderr = &stderr
			out, err := parent.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := parent.Start(); err != nil {
				t.Fatal(err)
			}
			waited := make(chan error, 1)
			t.Cleanup(func() {
				killIfAlive(parent.Process.Pid)
				<-waited
				if t.Failed() {
					t.Logf("parent's stderr:\n%s", stderr.String())
				}
			})
			ready := make(chan string, 1)
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					if strings.HasPrefix(sc.Text(), "ready ") {
						ready <- sc.Text()
					}
				}
				waited <- parent.Wait()
			}()
			select {
			case <-ready:
			case <-time.After(30 * time.Second):
				t.Fatal("parent not ready within 30s")
			}
			child := readPID(t, filepath.Join(dir, "pid"))
			if dead(child) {
				t.Fatalf("child %d dead before the parent was signalled", child)
			}

			if err := parent.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-waited:
				waited <- err // for the cleanup
				if sig == syscall.SIGTERM && err != nil {
					t.Fatalf("parent exited with %v after SIGTERM, want a clean Close", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("parent still running 20s after the signal")
			}
			waitDead(t, child, 3*time.Second)
		})
	}
}

// logged reports whether one line of logs holds every part.
func logged(logs string, parts ...string) bool {
	for line := range strings.Lines(logs) {
		n := 0
		for _, p := range parts {
			if strings.Contains(line, p) {
				n++
			}
		}
		if n == len(parts) {
			return true
		}
	}
	return false
}
