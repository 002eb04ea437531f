// Package proctest builds the project's binaries and runs them as real
// processes for end-to-end tests.
//
// A process started here must log one line matching "listening" followed by
// "addr=HOST:PORT" once it accepts connections; both favaproxy serve and the
// Fava emulator do. Start waits for that line and reports the address, so
// tests can listen on 127.0.0.1:0 and never race for ports.
package proctest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

var listenRe = regexp.MustCompile(`listening.*addr=\"?([^\s"]+)`)

// Build compiles the package pkg (an import path such as
// "github.com/favaproxy/favaproxy/cmd/favaproxy") into dir and returns the
// binary's path. With race true it builds with the race detector.
func Build(dir, pkg string, race bool) (string, error) {
	bin := filepath.Join(dir, filepath.Base(pkg))
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, pkg)
	cmd := exec.Command("go", args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, out.String())
	}
	return bin, nil
}

// Proc is a running process started by Start.
type Proc struct {
	Cmd  *exec.Cmd
	Addr string // host:port from the "listening" log line

	mu  sync.Mutex
	log bytes.Buffer // everything the process wrote, guarded by mu

	done    chan struct{}
	waitErr error
}

// Log returns everything the process has written to stdout and stderr so far.
func (p *Proc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// URL returns "http://" + p.Addr.
func (p *Proc) URL() string { return "http://" + p.Addr }

// Start runs bin with args, waits up to 20 s for its "listening" line, and
// registers a cleanup that kills it. Its output is kept for Log and printed
// on test failure.
func Start(tb testing.TB, bin string, args ...string) *Proc {
	tb.Helper()
	p, err := start(nil, bin, args...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		p.Kill()
		if tb.Failed() {
			tb.Logf("output of %s:\n%s", filepath.Base(bin), p.Log())
		}
	})
	return p
}

func start(env []string, bin string, args ...string) (*Proc, error) {
	p := &Proc{Cmd: exec.Command(bin, args...), done: make(chan struct{})}
	if env != nil {
		p.Cmd.Env = append(os.Environ(), env...)
	}
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	pr, pw := io.Pipe()
	p.Cmd.Stdout, p.Cmd.Stderr = pw, pw
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	addr := make(chan string, 1)
	// drained closes once every line the process wrote is in p.log. The
	// pipe hands a line to the scanner before it is appended, so Wait
	// returning does not mean the log is complete; done waits for this too.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		found := false
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := listenRe.FindStringSubmatch(line); m != nil && !found {
				found = true
				addr <- m[1]
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		p.waitErr = p.Cmd.Wait()
		pw.Close()
		<-drained
		close(p.done)
	}()
	select {
	case a := <-addr:
		p.Addr = a
		return p, nil
	case <-p.done:
		return nil, fmt.Errorf("%s exited before listening: %v\n%s", bin, p.waitErr, p.Log())
	case <-time.After(20 * time.Second):
		p.Kill()
		return nil, fmt.Errorf("%s did not listen within 20s:\n%s", bin, p.Log())
	}
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.Cmd.Process.Signal(sig) }

// Kill sends SIGKILL and waits for the process to exit. It is safe to call
// more than once.
func (p *Proc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.Cmd.Process.Kill()
	<-p.done
}

// Wait waits up to d for the process to exit and returns its exit error,
// or context.DeadlineExceeded.
func (p *Proc) Wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.waitErr
	case <-time.After(d):
		return context.DeadlineExceeded
	}
}

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// BinDir returns a directory for test binaries that lives as long as the
// test binary: callers build once in TestMain and remove it afterwards.
func BinDir() (string, error) {
	return os.MkdirTemp("", "favaproxy-bin-*")
}

// RaceEnabled is set by race.go when the tests themselves run with -race,
// so binaries they build match.
var RaceEnabled = false
