package e2e

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/internal/proctest"
	"github.com/favaproxy/favaproxy/internal/setcheck"
)

// crashShape is the size of a crash run: a small ledger, a slow chunked
// rewrite (so a kill lands inside it), short timeouts.
var crashShape = shape{txns: 150, chunk: 512, pause: 2 * time.Millisecond}

// crashRig is one ledger with an emulated Fava on a fixed port and one
// favaproxy in front of it, each of which can be killed and started again.
type crashRig struct {
	tb     testing.TB
	ledger string
	emuAt  string // 127.0.0.1:PORT, kept across restarts
	emu    *proctest.Proc
	proxy  *proctest.Proc
}

func newCrashRig(tb testing.TB) *crashRig {
	tb.Helper()
	// A port below the kernel's ephemeral range, so that no client
	// connection takes it while the emulator is down between a kill and
	// its restart.
	var addr string
	for try := 0; addr == ""; try++ {
		a := fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000))
		if ln, err := net.Listen("tcp", a); err == nil {
			ln.Close()
			addr = a
		} else if try > 100 {
			tb.Fatal(err)
		}
	}
	r := &crashRig{tb: tb, ledger: newLedger(tb, crashShape.txns), emuAt: addr}
	r.startEmu()
	r.startProxy()
	return r
}

// waitSettled waits (at most 20 s) until favaproxy has settled the write
// a kill of Fava interrupted: its rollback is no longer hot. Fava, like the
// emulator, is restarted by its supervisor after a delay; one restarted at
// once on the torn file fails to load it (a cut in a UTF-8 character) or
// loads the torn entries until it reloads.
func (r *crashRig) waitSettled() {
	r.tb.Helper()
	manifest := filepath.Join(filepath.Dir(r.ledger), ".favaproxy", "main.beancount.rollback", "manifest.json")
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(manifest); os.IsNotExist(err) {
			return
		}
		if time.Now().After(deadline) {
			r.tb.Fatalf("the interrupted write was not settled in 20 s; proxy log:\n%s", r.proxy.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startEmu starts the emulator, as a supervisor restarts Fava: again after
// a short delay while it exits at once.
func (r *crashRig) startEmu() {
	r.tb.Helper()
	args := []string{"--style", "1.30", "--listen", r.emuAt,
		"--write-chunk", fmt.Sprint(crashShape.chunk), "--write-pause", crashShape.pause.String(), r.ledger}
	for try := 1; ; try++ {
		p, err := proctest.StartProcess(bins.fakefava, args...)
		if err == nil {
			r.emu = p
			r.tb.Cleanup(p.Kill)
			return
		}
		if try == 50 {
			r.tb.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (r *crashRig) startProxy() {
	r.tb.Helper()
	r.proxy = startProxy(r.tb, "http://"+r.emuAt, r.ledger)
}

// keyedWrite sends one add_entries carrying the link id, with the
// idempotency key "key-"+id; it returns the status (0 when no answer came).
func keyedWrite(base, id string) int {
	req, err := http.NewRequest(http.MethodPut, base+"/"+slug+"/api/add_entries", bytes.NewReader(entriesBody("crash "+id, id)))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "key-"+id)
	res, err := client.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// crashWriter writes keyed entries one after the other through the rig's
// current proxy, retrying each key until it is acknowledged, as a careful
// client does.
type crashWriter struct {
	rig  *crashRig
	c    *setcheck.Checker
	run  int
	mu   sync.Mutex // guards base
	base string
	acks chanCounter
	stop chan struct{}
	done chan struct{}
}

type chanCounter struct {
	mu sync.Mutex
	n  int
}

func (c *chanCounter) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *chanCounter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func (w *crashWriter) setBase(b string) { w.mu.Lock(); w.base = b; w.mu.Unlock() }
func (w *crashWriter) getBase() string  { w.mu.Lock(); defer w.mu.Unlock(); return w.base }

func (w *crashWriter) loop() {
	defer close(w.done)
	for i := 0; ; i++ {
		id := fmt.Sprintf("w-%d-%d", w.run, i)
		w.c.Attempt(id)
		for {
			select {
			case <-w.stop:
				w.c.Indeterminate(id)
				return
			default:
			}
			if st := keyedWrite(w.getBase(), id); st >= 200 && st < 300 {
				w.c.Ack(id)
				w.acks.add()
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// midWrite waits until the emulator is rewriting the ledger (the file is
// shorter than it was), then a random part of a rewrite longer.
func midWrite(tb testing.TB, ledger string, rnd *rand.Rand) {
	tb.Helper()
	fi, err := os.Stat(ledger)
	if err != nil {
		tb.Fatal(err)
	}
	full := fi.Size()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if fi, err := os.Stat(ledger); err == nil && fi.Size() < full {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatal("no rewrite of the ledger began")
		}
		time.Sleep(200 * time.Microsecond)
	}
	// A rewrite takes about size/chunk pauses.
	rewrite := time.Duration(full/int64(crashShape.chunk)) * crashShape.pause
	time.Sleep(time.Duration(rnd.Int64N(int64(rewrite))))
}

// TestCrashKillPoints: kill -9 at random points of Fava's rewrite — of the
// emulator, of favaproxy, or of both — while a client writes keyed entries
// and retries each until it is acknowledged. Without the rollback journal
// (the control) the ledger is torn in most runs; with it, after every run
// the ledger passes bean-check, every acknowledged entry is there exactly
// once, nothing else is, and the write the kill interrupted landed exactly
// once when retried with its key.
func TestCrashKillPoints(t *testing.T) {
	requireProxy(t)
	setcheck.RequireTools(t)
	t.Setenv("FAVAPROXY_TIMEOUTS_UPSTREAM", "2s")
	t.Setenv("FAVAPROXY_DURABILITY_QUIET", "100ms")
	points, controls := 10, 4
	if *long {
		points, controls = 50, 10
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rnd := rand.New(rand.NewPCG(seed, 1))

	t.Run("ControlWithoutRollback", func(t *testing.T) {
		t.Setenv("FAVAPROXY_DURABILITY_DISABLED", "true")
		torn := 0
		for run := range controls {
			rig := newCrashRig(t)
			before, err := setcheck.CountLinks(rig.ledger, "gen-")
			if err != nil {
				t.Fatal(err)
			}
			w := &crashWriter{rig: rig, c: setcheck.New(), run: run, stop: make(chan struct{}), done: make(chan struct{})}
			w.setBase(rig.proxy.URL())
			go w.loop()
			midWrite(t, rig.ledger, rnd)
			rig.emu.Kill()
			close(w.stop)
			<-w.done
			rig.proxy.Kill()
			r, err := w.c.Check(rig.ledger)
			if err != nil {
				t.Fatal(err)
			}
			after, err := setcheck.CountLinks(rig.ledger, "gen-")
			if err != nil {
				t.Fatal(err)
			}
			if !r.BeanCheckOK || len(after) < len(before) || r.Lost > 0 {
				torn++
			}
			t.Logf("control run %d: original transactions %d → %d; report %s", run, len(before), len(after), r)
		}
		t.Logf("without the rollback journal: %d of %d kills left a torn or truncated ledger", torn, controls)
		if torn*2 < controls {
			t.Fatalf("only %d of %d kills tore the ledger: the experiment cannot show protection", torn, controls)
		}
	})

	t.Run("WithRollback", func(t *testing.T) {
		kinds := []string{"fava", "favaproxy", "both"}
		counts := map[string]int{}
		rolledBack := 0
		for run := range points {
			kind := kinds[run%len(kinds)]
			counts[kind]++
			rig := newCrashRig(t)
			w := &crashWriter{rig: rig, c: setcheck.New(), run: run, stop: make(chan struct{}), done: make(chan struct{})}
			w.setBase(rig.proxy.URL())
			go w.loop()
			waitAcks(t, w, 1)
			midWrite(t, rig.ledger, rnd)
			switch kind {
			case "fava":
				rig.emu.Kill()
				rig.waitSettled()
				rig.startEmu()
			case "favaproxy":
				rig.proxy.Kill()
				rig.startProxy()
			case "both":
				rig.proxy.Kill()
				rig.emu.Kill()
				rig.startProxy()
				w.setBase(rig.proxy.URL())
				rig.waitSettled()
				rig.startEmu()
			}
			w.setBase(rig.proxy.URL())
			// The interrupted key and one more must land.
			waitAcks(t, w, w.acks.get()+2)
			close(w.stop)
			<-w.done
			rig.proxy.Kill()
			rig.emu.Kill()
			r, err := w.c.Check(rig.ledger)
			if err != nil {
				t.Fatal(err)
			}
			rb := countIn(t, filepath.Join(filepath.Dir(rig.ledger), ".favaproxy", "main.beancount.journal.jsonl"), `"outcome":"rolled_back"`)
			rolledBack += rb
			t.Logf("run %d, kill %s: %d rollback records; %s", run, kind, rb, r)
			if !r.BeanCheckOK || r.Lost > 0 || r.Duplicated > 0 || r.Unexpected > 0 {
				t.Fatalf("run %d (kill %s): the ledger is damaged: %s\n%s", run, kind, r, r.BeanCheckOutput)
			}
		}
		t.Logf("kills: %v; %d rollback records; every run clean", counts, rolledBack)
		if rolledBack == 0 {
			t.Fatal("no write was ever rolled back or settled: the kills missed the writes")
		}
	})
}

// waitAcks waits until the writer has n acknowledgements (at most 60 s).
func waitAcks(tb testing.TB, w *crashWriter, n int) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for w.acks.get() < n {
		if time.Now().After(deadline) {
			tb.Fatalf("writer has %d acknowledgements, want %d; proxy log:\n%s", w.acks.get(), n, w.rig.proxy.Log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
