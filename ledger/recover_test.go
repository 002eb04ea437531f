package ledger

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/internal/setcheck"
)

// TestVerifyAgreesWithBeanCheck: Verify reports no problem on a test
// ledger that bean-check accepts (a false alarm would fail readiness
// probes and cron jobs).
func TestVerifyAgreesWithBeanCheck(t *testing.T) {
	setcheck.RequireTools(t)
	mains, err := filepath.Glob("../testdata/ledgers/*/main.beancount")
	if err != nil || len(mains) == 0 {
		t.Fatalf("no test ledgers: %v", err)
	}
	for _, main := range mains {
		t.Run(filepath.Base(filepath.Dir(main)), func(t *testing.T) {
			out, err := exec.Command("bean-check", main).CombinedOutput()
			problems, verr := Verify(config.Ledger{File: main, StateDir: t.TempDir()}, "idempotency-key")
			if verr != nil {
				t.Fatal(verr)
			}
			if err == nil && len(problems) > 0 {
				t.Errorf("bean-check passes, Verify reports %v", problems)
			}
			if err != nil {
				t.Logf("bean-check fails (%v): %s; Verify: %v", err, out, problems)
			}
		})
	}
}

// TestVerifyFindsHotRollback: a rollback left hot is reported.
func TestVerifyFindsHotRollback(t *testing.T) {
	e := newRollbackEnv(t, rbLedger)
	cfg := config.Ledger{File: e.file, StateDir: filepath.Join(filepath.Dir(e.file), ".favaproxy")}
	if p, err := Verify(cfg, "idempotency-key"); err != nil || len(p) != 0 {
		t.Fatalf("clean ledger: %v, %v", p, err)
	}
	if err := e.rb.begin(&manifest{Kind: "source"}, []string{e.file}, nil); err != nil {
		t.Fatal(err)
	}
	p, err := Verify(cfg, "idempotency-key")
	if err != nil || len(p) != 1 {
		t.Fatalf("hot rollback: %v, %v; want one problem", p, err)
	}
	os.Remove(e.rb.manifestPath())
}
