package e2e

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/internal/proctest"
	"github.com/favaproxy/favaproxy/internal/setcheck"
)

// TestControlTwoFavaProcessesLoseWrites is the control experiment: two
// emulated Fava processes on one ledger file, 16 writers straight at them.
// Each process rewrites the whole file from its own read, so acknowledged
// entries vanish or the file tears. If this test ever stops finding the
// problem, the suite proves nothing.
func TestControlTwoFavaProcessesLoseWrites(t *testing.T) {
	setcheck.RequireTools(t)
	sh := runShape()
	const attempts = 3
	for attempt := 1; attempt <= attempts; attempt++ {
		ledger := newLedger(t, sh.txns)
		before, err := setcheck.CountLinks(ledger, "gen-")
		if err != nil {
			t.Fatal(err)
		}
		trace := filepath.Join(filepath.Dir(ledger), "trace.jsonl")
		emus := []*proctest.Proc{startEmulator(t, ledger, trace, sh), startEmulator(t, ledger, trace, sh)}
		c := setcheck.New()
		statuses := writeLoad(t, c, urls(emus), sh)
		for _, p := range emus {
			p.Kill()
		}
		r, err := c.Check(ledger)
		if errors.Is(err, setcheck.ErrDisagree) {
			// The ledger is damaged past what a line-based reading
			// follows: that is what the control must show.
			t.Logf("attempt %d: statuses %s; %v", attempt, histogram(statuses), err)
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		o, err := favatest.Overlaps(trace)
		if err != nil {
			t.Fatal(err)
		}
		after, err := setcheck.CountLinks(ledger, "gen-")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("attempt %d: statuses %s; overlaps %+v; linked original transactions %d before, %d after",
			attempt, histogram(statuses), o, len(before), len(after))
		t.Logf("report %s", r)
		if r.Lost > 0 || r.Duplicated > 0 || r.Unexpected > 0 || !r.BeanCheckOK {
			return
		}
	}
	t.Fatalf("no loss, duplicate or torn ledger in %d attempts: the control experiment shows nothing", attempts)
}
