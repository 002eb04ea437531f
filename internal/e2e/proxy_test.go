package e2e

import (
	"net/http"
	"path/filepath"
	"testing"

	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/internal/proctest"
	"github.com/favaproxy/favaproxy/internal/setcheck"
)

// startProxy starts one favaproxy serve process in front of upstream.
func startProxy(tb testing.TB, upstream, ledger string, flags ...string) *proctest.Proc {
	tb.Helper()
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--upstream", upstream, "--ledger", ledger}, flags...)
	return proctest.Start(tb, bins.favaproxy, args...)
}

// TestThroughProxyNothingLost runs the control experiment's load through
// three favaproxy processes in front of the same two emulated Fava
// processes: nothing acknowledged is lost, nothing is duplicated or
// invented, every acknowledged entry is in the ledger exactly once, the
// ledger passes bean-check, readers polling api/changed and
// a page never see a 404 or 500, and the emulators never saw two writes,
// or a read and a write, at once — with group commit on, and off.
func TestThroughProxyNothingLost(t *testing.T) {
	requireProxy(t)
	setcheck.RequireTools(t)
	t.Run("Batched", func(t *testing.T) { testThroughProxy(t) })
	t.Run("Unbatched", func(t *testing.T) { testThroughProxy(t, "--no-batch") })
}

func testThroughProxy(t *testing.T, flags ...string) {
	sh := runShape()
	ledger := newLedger(t, sh.txns)
	trace := filepath.Join(filepath.Dir(ledger), "trace.jsonl")
	emus := []*proctest.Proc{startEmulator(t, ledger, trace, sh), startEmulator(t, ledger, trace, sh)}
	var proxies []*proctest.Proc
	for i := range 3 {
		proxies = append(proxies, startProxy(t, emus[i%2].URL(), ledger, flags...))
	}
	c := setcheck.New()
	stop := make(chan struct{})
	reads := readLoad(urls(proxies), 4, stop)
	writes := writeLoad(t, c, urls(proxies), sh)
	close(stop)
	readStatuses := reads()
	for _, p := range append(proxies, emus...) {
		p.Kill()
	}
	r, err := c.Check(ledger)
	if err != nil {
		t.Fatal(err)
	}
	o, err := favatest.Overlaps(trace)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("writes %s; reads %s; overlaps %+v", histogram(writes), histogram(readStatuses), o)
	t.Logf("report %s", r)
	// A write may be refused with 503 when its lock wait outlasts the
	// proxy's lock timeout (the long run overloads on purpose); any other
	// non-2xx answer is a failure, and most writes must land.
	for status, n := range writes {
		if status != http.StatusOK && status != http.StatusServiceUnavailable {
			t.Errorf("%d writes answered with status %d", n, status)
		}
	}
	if r.Acked*2 < r.Attempted {
		t.Errorf("acked=%d of %d attempted: too few writes landed to judge", r.Acked, r.Attempted)
	}
	if r.Lost != 0 || r.Duplicated != 0 || r.Unexpected != 0 || !r.BeanCheckOK {
		t.Errorf("lost=%d duplicated=%d unexpected=%d bean-check ok=%v: %s", r.Lost, r.Duplicated, r.Unexpected, r.BeanCheckOK, r.BeanCheckOutput)
	}
	if readStatuses[http.StatusOK] == 0 {
		t.Error("no reader got an answer during the load: the read check proves nothing")
	}
	for status, n := range readStatuses {
		if status != http.StatusOK {
			t.Errorf("readers got %d answers with status %d", n, status)
		}
	}
	if o.WriteWrite != 0 || o.ReadWrite != 0 {
		t.Errorf("emulators saw overlapping operations through the proxy: %+v", o)
	}
}
