package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/internal/etcdtest"
	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/internal/proctest"
	"github.com/favaproxy/favaproxy/internal/setcheck"
)

// hostConfig writes the configuration of one favaproxy "host": its own
// lock file (a host's local disk: flock excludes nobody elsewhere), the
// ledger on shared storage, and the lock backend; extra is more YAML.
func hostConfig(tb testing.TB, upstream, ledger, backend, etcd string, lockTimeout time.Duration) string {
	tb.Helper()
	dir := tb.TempDir()
	cfg := fmt.Sprintf(`listen: 127.0.0.1:0
upstream: %s
lock_timeout: %s
ledgers:
  - file: %s
    lock_file: %s
lock:
  backend: %s
  etcd:
    endpoints: [%s]
    prefix: /favaproxy/e2e
    ttl: 2s
`, upstream, lockTimeout, ledger, filepath.Join(dir, "ledger.lock"), backend, etcd)
	path := filepath.Join(dir, "favaproxy.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// startHost starts favaproxy serve with the configuration at cfg.
func startHost(tb testing.TB, cfg string) *proctest.Proc {
	tb.Helper()
	return proctest.Start(tb, bins.favaproxy, "serve", "--config", cfg)
}

// TestSeveralHosts: three favaproxy processes, each with its lock file in
// a directory of its own (as on three hosts), in front of two emulated
// Fava processes on one ledger, 16 writers. With flock, the lock files
// exclude nothing: acknowledged entries are lost or duplicated, or the
// ledger tears. With lock.backend etcd: nothing lost or duplicated, no two
// writes at once in the emulators' trace, bean-check clean.
func TestSeveralHosts(t *testing.T) {
	requireProxy(t)
	setcheck.RequireTools(t)
	srv := etcdtest.Start(t)
	t.Run("Flock", func(t *testing.T) {
		const attempts = 3
		for attempt := 1; attempt <= attempts; attempt++ {
			r, o, writes := runHosts(t, "flock", srv.Endpoint())
			t.Logf("attempt %d: writes %s; overlaps %+v; report %s", attempt, histogram(writes), o, r)
			if r.Lost > 0 || r.Duplicated > 0 || r.Unexpected > 0 || !r.BeanCheckOK || o.WriteWrite > 0 {
				return
			}
		}
		t.Fatalf("no loss, duplicate, tear or overlap in %d attempts: the control shows nothing", attempts)
	})
	t.Run("Etcd", func(t *testing.T) {
		r, o, writes := runHosts(t, "etcd", srv.Endpoint())
		t.Logf("writes %s; overlaps %+v; report %s", histogram(writes), o, r)
		if r.Lost != 0 || r.Duplicated != 0 || r.Unexpected != 0 || !r.BeanCheckOK {
			t.Errorf("lost=%d duplicated=%d unexpected=%d bean-check ok=%v: %s", r.Lost, r.Duplicated, r.Unexpected, r.BeanCheckOK, r.BeanCheckOutput)
		}
		if o.WriteWrite != 0 {
			t.Errorf("the emulators saw overlapping writes: %+v", o)
		}
		if r.Acked*2 < r.Attempted {
			t.Errorf("acked=%d of %d attempted: too few writes landed to judge", r.Acked, r.Attempted)
		}
		for status, n := range writes {
			if status != http.StatusOK {
				t.Errorf("%d writes answered %d", n, status)
			}
		}
	})
}

// runHosts runs the load of TestSeveralHosts once on a fresh ledger.
func runHosts(t *testing.T, backend, etcd string) (setcheck.Report, favatest.Overlap, map[int]int) {
	t.Helper()
	sh := runShape()
	ledger := newLedger(t, sh.txns)
	trace := filepath.Join(filepath.Dir(ledger), "trace.jsonl")
	emus := []*proctest.Proc{startEmulator(t, ledger, trace, sh), startEmulator(t, ledger, trace, sh)}
	var hosts []*proctest.Proc
	for i := range 3 {
		hosts = append(hosts, startHost(t, hostConfig(t, emus[i%2].URL(), ledger, backend, etcd, 20*time.Second)))
	}
	c := setcheck.New()
	writes := writeLoad(t, c, urls(hosts), sh)
	for _, p := range append(hosts, emus...) {
		p.Kill()
	}
	r, err := c.Check(ledger)
	if err != nil && backend == "etcd" {
		t.Fatal(err)
	}
	o, oerr := favatest.Overlaps(trace)
	if oerr != nil {
		t.Fatal(oerr)
	}
	return r, o, writes
}

// TestEtcdHolderKilled: a holder of the lock on etcd killed with SIGKILL
// (a `favaproxy lock` whose command holds the ledger) holds no one up for
// longer than its lease: a write through favaproxy waits for the lease to
// end, then lands.
func TestEtcdHolderKilled(t *testing.T) {
	requireProxy(t)
	srv := etcdtest.Start(t)
	ledger := newLedger(t, 20)
	emu := proctest.Start(t, bins.fakefava, "--style", favatest.Style130, "--listen", "127.0.0.1:0", "--reload-cost", "0", ledger)
	host := startHost(t, hostConfig(t, emu.URL(), ledger, "etcd", srv.Endpoint(), 20*time.Second))
	holderCfg := hostConfig(t, emu.URL(), ledger, "etcd", srv.Endpoint(), 20*time.Second)
	// The command announces itself once lock holds the lock.
	holder := proctest.Start(t, bins.favaproxy, "lock", "--config", holderCfg, "--", "sh", "-c", "echo listening addr=127.0.0.1:1; exec sleep 60")
	type answer struct {
		status int
		body   string
		err    error
		at     time.Time
	}
	done := make(chan answer, 1)
	go func() {
		status, body, err := addEntry(host.URL(), "alice", "after-kill")
		done <- answer{status, body, err, time.Now()}
	}()
	select {
	case a := <-done:
		t.Fatalf("a write was answered while another process held the lock: %d %s %v", a.status, a.body, a.err)
	case <-time.After(time.Second):
	}
	killed := time.Now()
	holder.Kill()
	a := <-done
	if a.err != nil || a.status != http.StatusOK {
		t.Fatalf("write after the holder was killed: %d %s %v", a.status, a.body, a.err)
	}
	waited := a.at.Sub(killed)
	t.Logf("write landed %v after the holder's SIGKILL (lease TTL 2s)", waited.Round(10*time.Millisecond))
	if waited > 2*time.Second+1500*time.Millisecond {
		t.Errorf("the write waited %v after the holder died, longer than its lease (2s) allows", waited)
	}
}

// TestEtcdHolderPaused: a favaproxy paused (SIGSTOP) with the lock held,
// past its lease, sends nothing more to Fava once it resumes: another host
// wrote meanwhile, the paused write is answered 503 saying the lock was
// lost, the emulators never saw two writes at once, and the ledger holds
// exactly the writes acknowledged.
func TestEtcdHolderPaused(t *testing.T) {
	requireProxy(t)
	setcheck.RequireTools(t)
	srv := etcdtest.Start(t)
	ledger := newLedger(t, 200)
	trace := filepath.Join(filepath.Dir(ledger), "trace.jsonl")
	// Fava reloads a changed ledger before it answers: 10 ms per
	// transaction makes that 2 s, the time in which the holder is paused.
	startEmu := func() *proctest.Proc {
		return proctest.Start(t, bins.fakefava, "--style", favatest.Style130, "--listen", "127.0.0.1:0",
			"--reload-cost", "10ms", "--trace", trace, ledger)
	}
	emuA, emuB := startEmu(), startEmu()
	a := startHost(t, hostConfig(t, emuA.URL(), ledger, "etcd", srv.Endpoint(), 20*time.Second))
	b := startHost(t, hostConfig(t, emuB.URL(), ledger, "etcd", srv.Endpoint(), 20*time.Second))
	// A write through B changes the ledger, so A's next request makes
	// emulator A reload.
	if status, body, err := addEntry(b.URL(), "bob", "first"); err != nil || status != http.StatusOK {
		t.Fatalf("first write: %d %s %v", status, body, err)
	}
	// A balance requirement makes A ask Fava to reload (GET changed)
	// under the lock, before it sends the write: A is paused there.
	type answer struct {
		status int
		body   string
		err    error
	}
	paused := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPut, a.URL()+"/"+slug+"/api/add_entries", strings.NewReader(string(entriesBody("write paused", "paused"))))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Favaproxy-Require", "Assets:Cash <= 1000000 USD")
		req.SetBasicAuth("alice", "secret")
		res, err := client.Do(req)
		if err != nil {
			paused <- answer{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		paused <- answer{status: res.StatusCode, body: string(b), err: err}
	}()
	time.Sleep(500 * time.Millisecond) // A holds the lock, waiting for the reload
	if err := a.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = a.Signal(syscall.SIGCONT)
		}
	}()
	// B waits for A's lease (2s) to end, then writes.
	if status, body, err := addEntry(b.URL(), "bob", "while-paused"); err != nil || status != http.StatusOK {
		t.Fatalf("write while A is paused: %d %s %v", status, body, err)
	}
	if err := a.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	var got answer
	select {
	case got = <-paused:
	case <-time.After(30 * time.Second):
		t.Fatal("the paused write got no answer 30 s after it resumed")
	}
	if got.err != nil || got.status != http.StatusServiceUnavailable || !strings.Contains(got.body, "lock was lost") {
		t.Errorf("paused write: status %d body %q err %v; want 503 saying the lock was lost", got.status, got.body, got.err)
	}
	o, err := favatest.Overlaps(trace)
	if err != nil {
		t.Fatal(err)
	}
	if o.WriteWrite != 0 {
		t.Errorf("the emulators saw overlapping writes: %+v", o)
	}
	text, err := os.ReadFile(ledger)
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]int{"first": 1, "while-paused": 1, "paused": 0} {
		if n := strings.Count(string(text), "^"+id+"\n"); n != want {
			t.Errorf("%s is in the ledger %d times, want %d", id, n, want)
		}
	}
	if out, err := exec.Command("bean-check", ledger).CombinedOutput(); err != nil {
		t.Errorf("bean-check: %v\n%s", err, out)
	}
}

// TestEtcdDown: with etcd stopped, writes are answered 503 within the
// lock timeout and reads pass; /readyz reports the lock backend; once
// etcd is back, writes land again.
func TestEtcdDown(t *testing.T) {
	requireProxy(t)
	srv := etcdtest.Start(t)
	ledger := newLedger(t, 20)
	emu := proctest.Start(t, bins.fakefava, "--style", favatest.Style130, "--listen", "127.0.0.1:0", "--reload-cost", "0", ledger)
	host := startHost(t, hostConfig(t, emu.URL(), ledger, "etcd", srv.Endpoint(), 6*time.Second))
	if status, body, err := addEntry(host.URL(), "alice", "up"); err != nil || status != http.StatusOK {
		t.Fatalf("write with etcd up: %d %s %v", status, body, err)
	}
	srv.Stop()
	start := time.Now()
	status, body, err := addEntry(host.URL(), "alice", "down")
	if err != nil || status != http.StatusServiceUnavailable {
		t.Errorf("write with etcd down: %d %s %v; want 503", status, body, err)
	}
	if d := time.Since(start); d > 6*time.Second+2*time.Second {
		t.Errorf("write with etcd down answered after %v; lock_timeout is 6s", d)
	}
	res, err := client.Get(host.URL() + "/" + slug + "/api/errors")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Errorf("read with etcd down: %v %v", res, err)
	}
	if res != nil {
		res.Body.Close()
	}
	res, err = client.Get(host.URL() + "/readyz")
	if err != nil || res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz with etcd down: %v %v; want 503", res, err)
	}
	if res != nil {
		res.Body.Close()
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		status, body, err = addEntry(host.URL(), "alice", "back")
		if err == nil && status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes did not resume 20 s after etcd came back: %d %s %v", status, body, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	text, _ := os.ReadFile(ledger)
	for id, want := range map[string]int{"up": 1, "down": 0, "back": 1} {
		if n := strings.Count(string(text), "^"+id+"\n"); n != want {
			t.Errorf("%s is in the ledger %d times, want %d", id, n, want)
		}
	}
}
