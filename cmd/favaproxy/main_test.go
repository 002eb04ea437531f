package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/internal/proctest"
)

// bin is favaproxy built once for the end-to-end tests.
var bin string

func TestMain(m *testing.M) {
	// Tests set the FAVAPROXY_* variables they want; none come from outside.
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, envPrefix) {
			os.Unsetenv(name)
		}
	}
	os.Exit(func() int {
		dir, err := proctest.BinDir()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		bin, err = proctest.Build(dir, "github.com/favaproxy/favaproxy/cmd/favaproxy", proctest.RaceEnabled)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}())
}

// result is how a favaproxy process ended.
type result struct {
	code           int
	stdout, stderr string
}

// favaproxy runs the binary to completion (at most 30 s) with env added to
// the environment.
func favaproxy(tb testing.TB, env []string, args ...string) result {
	tb.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cleanEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		tb.Fatalf("favaproxy %q did not exit within 30s", args)
	}
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
		if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
			r.code = 128 + int(ws.Signal())
		}
	default:
		tb.Fatal(err)
	}
	return r
}

// cleanEnv is this environment without FAVAPROXY_* variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			env = append(env, kv)
		}
	}
	return env
}

// running is a favaproxy process left running by startUntil.
type running struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // stdout lines; closed at EOF
	done  chan struct{}
	err   error // of Wait, once done is closed
	errb  *bytes.Buffer
}

// start starts favaproxy with args; its stdout lines arrive on lines.
// Cleanup kills it.
func start(tb testing.TB, args ...string) *running {
	tb.Helper()
	r := &running{cmd: exec.Command(bin, args...), lines: make(chan string, 1024), done: make(chan struct{}), errb: new(bytes.Buffer)}
	r.cmd.Env = cleanEnv()
	r.cmd.Stderr = r.errb
	var err error
	if r.stdin, err = r.cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
		r.err = r.cmd.Wait() // after stdout is drained: Wait closes the pipe
		close(r.done)
	}()
	tb.Cleanup(func() {
		r.cmd.Process.Kill()
		r.stdin.Close()
		<-r.done
	})
	return r
}

// startUntil starts favaproxy with args and waits for the line want.
func startUntil(tb testing.TB, want string, args ...string) *running {
	tb.Helper()
	r := start(tb, args...)
	r.expect(tb, want)
	return r
}

// expect waits up to 20 s for the next stdout line and checks it is want.
func (r *running) expect(tb testing.TB, want string) {
	tb.Helper()
	select {
	case line, ok := <-r.lines:
		if !ok || line != want {
			tb.Fatalf("favaproxy %q said %q (eof=%v), want %q; stderr:\n%s", r.cmd.Args[1:], line, !ok, want, r.errb)
		}
	case <-time.After(20 * time.Second):
		tb.Fatalf("favaproxy %q did not say %q within 20s", r.cmd.Args[1:], want)
	}
}

// wait waits up to 20 s for the process to exit and returns its status.
func (r *running) wait(tb testing.TB) int {
	tb.Helper()
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		tb.Fatal("favaproxy did not exit within 20s")
	}
	var ee *exec.ExitError
	switch {
	case r.err == nil:
		return 0
	case errors.As(r.err, &ee):
		return ee.ExitCode()
	}
	tb.Fatal(r.err)
	return -1
}

func TestVersion(t *testing.T) {
	r := favaproxy(t, nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "favaproxy ") {
		t.Fatalf("version: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--no-such-flag"},
		{"serve", "extra"},
		{"nonsense"},
		{"lock", "--ledger", "x"},
		{"lock", "--", "true"},
	} {
		r := favaproxy(t, nil, args...)
		if got, want := r.code, 2; got != want {
			t.Errorf("favaproxy %q: exit %d, want %d; stderr %q", args, got, want, r.stderr)
		}
	}
}

func TestVersionFromLdflags(t *testing.T) {
	old := version
	t.Cleanup(func() { version = old })
	version = "v1.2.3"
	if got := versionString(); !strings.HasPrefix(got, "favaproxy v1.2.3 go") {
		t.Fatalf("versionString() = %q, want the ldflags version", got)
	}
}
