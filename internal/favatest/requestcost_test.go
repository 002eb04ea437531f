package favatest

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRequestCostBurnsCPUOneAtATime: with RequestCost, every request burns
// that much CPU, and requests burn it one at a time (Fava under Python's
// interpreter lock), so concurrent requests take at least their sum.
func TestRequestCostBurnsCPUOneAtATime(t *testing.T) {
	const cost, n = 30 * time.Millisecond, 4
	e := newEmu(t, Options{RequestCost: cost}, baseLedger)
	url := e.http.URL + "/" + e.slug + "/api/errors"
	cpu0 := processCPU(t)
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, err := http.Get(url)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("status=%d, want 200", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if got, want := time.Since(start), n*cost; got < want {
		t.Errorf("%d concurrent requests took %v, want at least %v (one at a time)", n, got, want)
	}
	if got, want := processCPU(t)-cpu0, n*cost; got < want {
		t.Errorf("%d requests burnt %v of CPU, want at least %v", n, got, want)
	}
}

// processCPU returns this process's CPU time so far.
func processCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_PROCESS_CPUTIME_ID, &ts); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ts.Nano())
}
