package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRecoverAfterKill: a favaproxy killed while its Fava was rewriting the
// ledger leaves the ledger torn and its pre-image behind. verify reports
// both; recover waits out the request (it may still run at Fava), puts the
// ledger back and keeps the torn text beside it; verify is then clean.
func TestRecoverAfterKill(t *testing.T) {
	const text = "option \"title\" \"Test\"\n\n2024-01-01 open Assets:Cash\n"
	ledger := filepath.Join(t.TempDir(), "main.beancount")
	if err := os.WriteFile(ledger, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	torn, stop := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			w.Write([]byte("<html>fava</html>"))
			return
		}
		// Fava truncates the file and dies before writing it back.
		io.Copy(io.Discard, r.Body)
		os.WriteFile(ledger, []byte(text[:10]), 0o644)
		close(torn)
		<-stop
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(stop) }) // runs first
	env := []string{"FAVAPROXY_TIMEOUTS_UPSTREAM=1s", "FAVAPROXY_DURABILITY_QUIET=50ms"}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	p := serve(t, &upstream{Server: up}, ledger)
	post(t, p)
	select {
	case <-torn:
	case <-time.After(20 * time.Second):
		t.Fatal("the write never reached Fava")
	}
	began := time.Now()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	r := favaproxy(t, env, "verify", "--ledger", ledger)
	if r.code != 1 || !strings.Contains(r.stdout, "not settled") {
		t.Fatalf("verify of a torn ledger: exit %d, stdout %q; want 1 naming the unsettled write", r.code, r.stdout)
	}
	if d := time.Until(began.Add(1100 * time.Millisecond)); d > 0 {
		time.Sleep(d) // the killed proxy's request can no longer be running
	}
	r = favaproxy(t, env, "recover", "--ledger", ledger)
	if r.code != 0 || !strings.Contains(r.stdout, "rolled back") {
		t.Fatalf("recover: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if b, _ := os.ReadFile(ledger); string(b) != text {
		t.Fatalf("ledger after recover %q, want %q", b, text)
	}
	kept, _ := filepath.Glob(filepath.Join(filepath.Dir(ledger), ".favaproxy", "main.beancount.*.replaced"))
	if len(kept) != 1 {
		t.Errorf("copies of the torn text: %v, want one", kept)
	}
	r = favaproxy(t, env, "verify", "--ledger", ledger)
	if r.code != 0 {
		t.Fatalf("verify after recover: exit %d, stdout %q", r.code, r.stdout)
	}
	r = favaproxy(t, env, "recover", "--ledger", ledger)
	if r.code != 0 || !strings.Contains(r.stdout, "no interrupted write") {
		t.Fatalf("second recover: exit %d, stdout %q", r.code, r.stdout)
	}
}
