package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/internal/proctest"
)

var (
	fakefavaOnce sync.Once
	fakefavaBin  string
	fakefavaErr  error
)

// fakefava builds the Fava emulator once.
func fakefava(tb testing.TB) string {
	tb.Helper()
	fakefavaOnce.Do(func() {
		fakefavaBin, fakefavaErr = proctest.Build(filepath.Dir(bin), "github.com/favaproxy/favaproxy/internal/favatest/cmd/fakefava", false)
	})
	if fakefavaErr != nil {
		tb.Fatal(fakefavaErr)
	}
	return fakefavaBin
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

var childPID = regexp.MustCompile(`msg="child started".* pid=(\d+)`)

// startRun starts `favaproxy run` with the emulator as Fava and waits until
// the proxy is ready; it returns the process and the emulator's PID.
func startRun(tb testing.TB) (*proctest.Proc, string, int) {
	tb.Helper()
	ledger := ledgerFile(tb)
	addr := freeAddr(tb)
	p := proctest.Start(tb, bin, "run", "--listen", addr, "--ledger", ledger, "--", fakefava(tb), "--reload-cost", "0", ledger)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("favaproxy run not ready within 20s:\n%s", p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	m := childPID.FindStringSubmatch(p.Log())
	if m == nil {
		tb.Fatalf("no child pid in the log:\n%s", p.Log())
	}
	pid, _ := strconv.Atoi(m[1])
	return p, addr, pid
}

// TestRunServesChild: favaproxy run proxies to the Fava it started, and
// /readyz checks it.
func TestRunServesChild(t *testing.T) {
	_, addr, _ := startRun(t)
	resp, err := http.Get("http://" + addr + "/test/api/changed")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"data"`)) {
		t.Fatalf("GET /test/api/changed = %d %s, want 200 with Fava's JSON", resp.StatusCode, body)
	}
	resp, err = http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte(`"fava":"ok"`)) {
		t.Fatalf("/readyz = %s, want a fava check", body)
	}
	resp, err = http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte("\nfavaproxy_upstream_restarts_total 0\n")) {
		t.Fatalf("/metrics lacks favaproxy_upstream_restarts_total 0")
	}
}

// TestRunLeavesNoChild: whether favaproxy is stopped with SIGTERM or killed
// with SIGKILL, the Fava it started does not outlive it.
func TestRunLeavesNoChild(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			p, _, pid := startRun(t)
			if runDead(pid) {
				t.Fatalf("child %d dead before the signal", pid)
			}
			if err := p.Signal(sig); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for !runDead(pid) {
				if time.Now().After(deadline) {
					t.Fatalf("Fava (pid %d) still alive 5s after %s to favaproxy:\n%s", pid, sig, p.Log())
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestRunNeedsCommand: run without a Fava command is a usage error.
func TestRunNeedsCommand(t *testing.T) {
	r := favaproxy(t, nil, "run", "--ledger", ledgerFile(t))
	if r.code != exitUsage {
		t.Fatalf("exit = %d, want %d; stderr %q", r.code, exitUsage, r.stderr)
	}
	r = favaproxy(t, nil, "run", "--ledger", ledgerFile(t), "--", "fava", "-p", "5000", "x.beancount")
	if r.code != exitUsage || !bytes.Contains([]byte(r.stderr), []byte("FAVA_PORT")) {
		t.Fatalf("exit = %d, stderr %q; want a usage error about -p", r.code, r.stderr)
	}
}

func TestFavaCommandPrefix(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
		err  bool
	}{
		{[]string{"fava", "l.beancount"}, "", false},
		{[]string{"fava", "--prefix", "/books/", "l.beancount"}, "/books", false},
		{[]string{"fava", "--prefix=books", "l.beancount"}, "/books", false},
		{[]string{"fava", "--host", "0.0.0.0", "l.beancount"}, "", true},
		{[]string{"fava", "-p5000", "l.beancount"}, "", true},
		{[]string{"fava", "--port=5000"}, "", true},
	} {
		got, err := favaCommandPrefix(tt.args)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("favaCommandPrefix(%q) = %q, %v; want %q, error %v", tt.args, got, err, tt.want, tt.err)
		}
	}
}

// runDead reports whether pid is gone or a zombie.
func runDead(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
}
