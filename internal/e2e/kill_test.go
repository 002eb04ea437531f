package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/internal/setcheck"
)

// TestKillMidWriteTearsLedger shows the risk of Fava's in-place rewrite:
// kill -9 while it writes the file back leaves a truncated ledger, and
// transactions that were there before the write are gone.
func TestKillMidWriteTearsLedger(t *testing.T) {
	setcheck.RequireTools(t)
	points := []float64{0.5}
	if *long {
		points = []float64{0.05, 0.25, 0.5, 0.75, 0.95}
	}
	for _, frac := range points {
		t.Run(fmt.Sprintf("At%02.0f%%", frac*100), func(t *testing.T) {
			ledger := newLedger(t, 200)
			fi, err := os.Stat(ledger)
			if err != nil {
				t.Fatal(err)
			}
			size := fi.Size()
			before, err := setcheck.CountLinks(ledger, "gen-")
			if err != nil {
				t.Fatal(err)
			}
			sh := shape{chunk: 512, pause: 5 * time.Millisecond}
			p := startEmulator(t, ledger, filepath.Join(t.TempDir(), "trace.jsonl"), sh)
			c := setcheck.New()
			done := make(chan struct{})
			go func() {
				defer close(done)
				c.Attempt("w-0-0")
				status, _, err := addEntry(p.URL(), "", "w-0-0")
				classify(c, "w-0-0", status, err)
			}()
			target := int64(float64(size) * frac)
			deadline := time.Now().Add(10 * time.Second)
			for {
				fi, err := os.Stat(ledger)
				if err == nil && fi.Size() > 0 && fi.Size() >= target && fi.Size() < size {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the write never reached %d of %d bytes", target, size)
				}
				time.Sleep(100 * time.Microsecond)
			}
			p.Kill()
			<-done
			r, err := c.Check(ledger)
			if err != nil {
				t.Fatal(err)
			}
			after, err := setcheck.CountLinks(ledger, "gen-")
			if err != nil {
				t.Fatal(err)
			}
			fi, _ = os.Stat(ledger)
			t.Logf("killed at %d of %d bytes; generated links %d before, %d after; report %s", fi.Size(), size, len(before), len(after), r)
			if fi.Size() >= size || len(after) >= len(before) {
				t.Fatalf("kill -9 mid-write left %d bytes and %d of %d linked transactions: no damage shown", fi.Size(), len(after), len(before))
			}
			if r.Acked != 0 {
				t.Fatalf("a write killed mid-way was acknowledged: %s", r)
			}
		})
	}
}
