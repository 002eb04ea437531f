package loadtest

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/internal/ledgergen"
	"github.com/favaproxy/favaproxy/internal/proctest"
)

// needPackage skips the test unless the package at dir (relative to the
// module root) has Go files.
func needPackage(tb testing.TB, dir string) {
	tb.Helper()
	files, _ := filepath.Glob(filepath.Join("..", "..", dir, "*.go"))
	if len(files) == 0 {
		tb.Skipf("%s is not in this tree yet", dir)
	}
}

// needServe skips the test while "favaproxy serve" returns successfully
// without ever serving, as a command that is not wired up yet does; a serve
// that fails is a test failure.
func needServe(tb testing.TB, bin, dir string) {
	tb.Helper()
	ledger := filepath.Join(dir, "probe.beancount")
	if err := ledgergen.File(ledger, ledgergen.Options{Title: ledgerTitle, Transactions: 1}); err != nil {
		tb.Fatal(err)
	}
	args := []string{"serve", "--listen", "127.0.0.1:0", "--upstream", "http://127.0.0.1:1", "--ledger", ledger}
	p, err := proctest.StartProcess(bin, args...)
	if err == nil {
		p.Kill()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, runErr := exec.CommandContext(ctx, bin, args...).CombinedOutput(); runErr == nil {
		tb.Skipf("favaproxy serve exits 0 without serving (not wired up yet?):\n%s", out)
	}
	tb.Fatal(err)
}

// TestQuickRun runs the whole benchmark in quick mode against the real
// binaries: every phase must produce figures and no acknowledged write may
// be lost or duplicated. Ratios are reported, never asserted.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes under load for about 30 s")
	}
	needPackage(t, "cmd/favaproxy")
	needPackage(t, "internal/favatest/cmd/fakefava")
	if os.Getenv("CI") != "" {
		// CI installs both; elsewhere the run does without them (the Go
		// client replaces wrk, and nginx's baseline is left out).
		needTool(t, "wrk")
		needTool(t, "nginx", "/usr/sbin/nginx")
	}
	dir := t.TempDir()
	fakefava, err := proctest.Build(dir, FakefavaPkg, false)
	if err != nil {
		t.Fatal(err)
	}
	favaproxy, err := proctest.Build(dir, FavaproxyPkg, false)
	if err != nil {
		t.Fatal(err)
	}
	benchserve, err := proctest.Build(dir, BenchservePkg, false)
	if err != nil {
		t.Fatal(err)
	}
	needServe(t, favaproxy, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r, err := Run(ctx, Options{Quick: true, Dir: dir, Fakefava: fakefava, Favaproxy: favaproxy, Benchserve: benchserve, Log: t.Output()})
	if r != nil {
		var sb strings.Builder
		r.WriteTable(&sb)
		t.Log("\n" + sb.String())
	}
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Phase{}
	for _, p := range r.Phases {
		byName[p.Name] = p
	}
	for _, name := range []string{PhaseWrites, PhaseReads, PhaseHostile} {
		p, ok := byName[name]
		if !ok {
			t.Errorf("no %s phase", name)
			continue
		}
		if len(p.Results) == 0 {
			t.Errorf("%s: no results", name)
		}
		for _, res := range p.Results {
			what := name + "/" + res.Setup + " " + res.Route
			if res.OK == 0 || res.PerSecond <= 0 || res.P50Ms <= 0 || res.P99Ms <= 0 {
				t.Errorf("%s: ok=%d per_second=%v p50=%v p99=%v, want figures", what, res.OK, res.PerSecond, res.P50Ms, res.P99Ms)
			}
			if res.Failed != 0 {
				t.Errorf("%s: %d requests failed (%s)", what, res.Failed, res.Note)
			}
			if res.Lost != 0 || res.Duplicated != 0 {
				t.Errorf("%s: lost=%d duplicated=%d, want 0", what, res.Lost, res.Duplicated)
			}
			if strings.HasPrefix(res.Setup, "favaproxy") && res.PeakRSSKiB <= 0 {
				t.Errorf("%s: no peak RSS", what)
			}
		}
	}
	setups := map[string]bool{}
	for _, res := range byName[PhaseReads].Results {
		setups[res.Setup] = true
	}
	for _, name := range []string{"direct", "favaproxy", "go-reverseproxy", "go-nethttp-floor", "go-tcp-relay", "nginx"} {
		if !setups[name] {
			t.Errorf("reads: no %s setup", name)
		}
	}
	if got, want := len(byName[PhaseWrites].Results), 3; got != want {
		t.Errorf("write setups=%d, want %d", got, want)
	}
	if m := byName[PhaseMemory]; len(m.Memory) == 0 {
		t.Error("memory phase: no figures")
	}
	var js strings.Builder
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(js.String()), "\n")
	if got, want := len(lines), len(r.Phases); got != want {
		t.Fatalf("JSON lines=%d, want one per phase (%d)", got, want)
	}
	for _, l := range lines {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil || v["phase"] == nil {
			t.Errorf("JSON line %q: %v, want an object with a phase", l, err)
		}
	}
}
