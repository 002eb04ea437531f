// Package etcdtest runs a real etcd server (Debian's etcd-server package,
// the etcd binary on PATH or in $ETCD_BIN) on loopback for tests: one
// member, its data in a temporary directory, always stopped at the end of
// the test.
package etcdtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Server is a running etcd.
type Server struct {
	bin, dir           string
	clientURL, peerURL string

	mu  sync.Mutex
	cmd *exec.Cmd
	out *syncBuffer
}

// Binary returns the etcd binary to run, or "" when there is none.
func Binary() string {
	if b := os.Getenv("ETCD_BIN"); b != "" {
		return b
	}
	for _, c := range []string{"etcd", "/usr/bin/etcd"} {
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	return ""
}

// Start starts an etcd for tb, skipping the test when none is installed
// (CI installs Debian's etcd-server), and stops it when the test ends.
func Start(tb testing.TB) *Server {
	tb.Helper()
	bin := Binary()
	if bin == "" {
		tb.Skip("etcd not installed (Debian package etcd-server, or set ETCD_BIN)")
	}
	s := &Server{bin: bin, dir: tb.TempDir()}
	s.clientURL, s.peerURL = "http://"+freeAddr(tb), "http://"+freeAddr(tb)
	if err := s.start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			tb.Logf("etcd log:\n%s", s.Log())
		}
	})
	return s
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

// Endpoint returns the client URL.
func (s *Server) Endpoint() string { return s.clientURL }

// start runs etcd and waits until it answers.
func (s *Server) start() error {
	s.mu.Lock()
	s.out = &syncBuffer{}
	cmd := exec.Command(s.bin,
		"--name", "default",
		"--data-dir", s.dir+"/data",
		"--listen-client-urls", s.clientURL,
		"--advertise-client-urls", s.clientURL,
		"--listen-peer-urls", s.peerURL,
		"--initial-advertise-peer-urls", s.peerURL,
		"--initial-cluster", "default="+s.peerURL,
		"--log-level", "warn",
	)
	cmd.Stdout, cmd.Stderr = s.out, s.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("start etcd: %w", err)
	}
	s.cmd = cmd
	s.mu.Unlock()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.clientURL}, DialTimeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Get(ctx, "health")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("etcd did not answer in 20 s: %v\n%s", err, s.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop kills etcd (by its PID) and waits for it to exit. Its data stays, so
// Restart brings back the same cluster.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// Restart starts etcd again on the same addresses and data.
func (s *Server) Restart() error {
	s.Stop()
	return s.start()
}

// Log returns what etcd printed.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out == nil {
		return ""
	}
	return s.out.String()
}

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{s.clientURL}, DialTimeout: 2 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// PID returns etcd's process ID, 0 when it is stopped.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// syncBuffer is a bytes.Buffer safe for etcd's output and Log at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
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
