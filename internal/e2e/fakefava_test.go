package e2e

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/internal/proctest"
)

// TestFakefavaProcess pins the emulator's process contract: it logs its
// address, serves the ledger under its slug with --prefix, and exits
// cleanly on SIGTERM.
func TestFakefavaProcess(t *testing.T) {
	ledger := newLedger(t, 10)
	p := proctest.Start(t, bins.fakefava, "--style", "1.27", "--listen", "127.0.0.1:0", "--prefix", "/fava", "--reload-cost", "0", ledger)
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := noRedirect.Get(p.URL() + "/fava/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if got, want := res.Header.Get("Location"), "/fava/"+slug+"/income_statement/"; res.StatusCode != http.StatusFound || got != want {
		t.Fatalf("GET /fava/: %d Location=%q, want 302 %q", res.StatusCode, got, want)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(10 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.Log())
	}
	if !strings.Contains(p.Log(), "msg=stopped") {
		t.Fatalf("no clean stop in the log:\n%s", p.Log())
	}
}
