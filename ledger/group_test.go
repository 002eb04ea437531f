package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/semaphore"
)

// gcLock is an exclusive, context-aware lock for tests.
type gcLock struct{ sem *semaphore.Weighted }

func newGCLock() *gcLock { return &gcLock{semaphore.NewWeighted(1)} }

func (l *gcLock) Lock(ctx context.Context) (func(), error) {
	if err := l.sem.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	return func() { l.sem.Release(1) }, nil
}

// TestGroupCommitBatchesWaiters holds the lock while 20 writes queue up,
// then checks that they ran in far fewer batches than writes, each got its
// own result, and every item ran exactly once.
func TestGroupCommitBatchesWaiters(t *testing.T) {
	l := newGCLock()
	var mu sync.Mutex
	var batches [][]int
	g := &group[int, string]{
		lock: l.Lock,
		exec: func(ctx context.Context, items []int) ([]string, []error) {
			mu.Lock()
			batches = append(batches, slices.Clone(items))
			mu.Unlock()
			res := make([]string, len(items))
			for i, it := range items {
				res[i] = fmt.Sprintf("stored %d", it)
			}
			return res, make([]error, len(items))
		},
	}
	release, _ := l.Lock(context.Background())
	const n = 20
	var wg sync.WaitGroup
	results := make([]string, n)
	for i := range n {
		wg.Go(func() {
			r, err := g.Do(context.Background(), i, 10)
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		})
	}
	waitGroupLen(t, func() bool { return g.Len() == n })
	release()
	wg.Wait()

	for i, r := range results {
		if want := fmt.Sprintf("stored %d", i); r != want {
			t.Errorf("result %d = %q, want %q", i, r, want)
		}
	}
	var all []int
	for _, b := range batches {
		all = append(all, b...)
	}
	slices.Sort(all)
	want := make([]int, n)
	for i := range want {
		want[i] = i
	}
	if !slices.Equal(all, want) {
		t.Fatalf("items executed = %v, want each of 0..%d once", all, n-1)
	}
	if len(batches) != 1 {
		t.Errorf("batches = %d (%v), want 1: all writes queued behind one lock holder", len(batches), batches)
	}
}

// TestGroupCommitKeepsArrivalOrderAndLimits checks batches are cut in
// arrival order at maxItems and maxBytes.
func TestGroupCommitKeepsArrivalOrderAndLimits(t *testing.T) {
	l := newGCLock()
	var batches [][]int
	g := &group[int, int]{
		lock:     l.Lock,
		maxItems: 3,
		maxBytes: 25,
		exec: func(ctx context.Context, items []int) ([]int, []error) {
			batches = append(batches, slices.Clone(items)) // under the lock
			return items, make([]error, len(items))
		},
	}
	release, _ := l.Lock(context.Background())
	var wg sync.WaitGroup
	sizes := []int64{10, 10, 10, 10, 10, 30, 1}
	for i, size := range sizes {
		wg.Go(func() { g.Do(context.Background(), i, size) })
		waitGroupLen(t, func() bool { return g.Len() == i+1 }) // fix arrival order
	}
	release()
	wg.Wait()
	want := [][]int{{0, 1}, {2, 3}, {4}, {5}, {6}}
	if fmt.Sprint(batches) != fmt.Sprint(want) {
		t.Fatalf("batches = %v, want %v", batches, want)
	}
}

// TestGroupCommitSoloItems: an item marked solo (a conditional write) runs
// in a batch of its own; the items around it batch as usual.
func TestGroupCommitSoloItems(t *testing.T) {
	l := newGCLock()
	var batches [][]int
	g := &group[int, int]{
		lock: l.Lock,
		solo: func(i int) bool { return i%10 == 9 },
		exec: func(ctx context.Context, items []int) ([]int, []error) {
			batches = append(batches, slices.Clone(items))
			return items, make([]error, len(items))
		},
	}
	release, _ := l.Lock(context.Background())
	var wg sync.WaitGroup
	items := []int{0, 1, 19, 2, 3, 29, 39, 4}
	for n, item := range items {
		wg.Go(func() { g.Do(context.Background(), item, 1) })
		waitGroupLen(t, func() bool { return g.Len() == n+1 })
	}
	release()
	wg.Wait()
	want := [][]int{{0, 1}, {19}, {2, 3}, {29}, {39}, {4}}
	if fmt.Sprint(batches) != fmt.Sprint(want) {
		t.Fatalf("batches = %v, want %v", batches, want)
	}
}

// TestGroupCommitWithdrawsOnCancel: a write whose caller gives up while it
// is still queued is never executed.
func TestGroupCommitWithdrawsOnCancel(t *testing.T) {
	l := newGCLock()
	var ran atomic.Int32
	g := &group[int, int]{
		lock: l.Lock,
		exec: func(ctx context.Context, items []int) ([]int, []error) {
			ran.Add(int32(len(items)))
			return items, make([]error, len(items))
		},
	}
	release, _ := l.Lock(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := g.Do(ctx, 1, 1)
		errc <- err
	}()
	waitGroupLen(t, func() bool { return g.Len() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Do() error = %v, want context.Canceled", err)
	}
	release()
	if _, err := g.Do(context.Background(), 2, 1); err != nil {
		t.Fatal(err)
	}
	if got := ran.Load(); got != 1 {
		t.Fatalf("executed %d items, want 1 (the withdrawn one must not run)", got)
	}
}

// TestGroupCommitFinishesTakenWork: once a leader has taken a write, the
// write completes and its caller gets the result even if it gave up.
func TestGroupCommitFinishesTakenWork(t *testing.T) {
	l := newGCLock()
	inExec := make(chan struct{})
	unblock := make(chan struct{})
	g := &group[int, int]{
		lock: l.Lock,
		exec: func(ctx context.Context, items []int) ([]int, []error) {
			close(inExec)
			<-unblock
			if ctx.Err() != nil {
				t.Error("exec ran under a canceled context")
			}
			return items, make([]error, len(items))
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() {
		r, _ := g.Do(ctx, 7, 1)
		done <- r
	}()
	<-inExec
	cancel()
	close(unblock)
	if r := <-done; r != 7 {
		t.Fatalf("result = %d, want 7", r)
	}
}

func waitGroupLen(tb testing.TB, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGroupCommitGathersAfterABatch: a leader that takes the lock just
// after a batch ended waits for the gather delay before it takes its batch,
// so the writers that batch answered, resending at about the same moment,
// join it instead of queueing behind a batch of one.
func TestGroupCommitGathersAfterABatch(t *testing.T) {
	for _, gather := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprint("gather=", gather), func(t *testing.T) {
			l := newGCLock()
			var mu sync.Mutex
			var batches [][]int
			fire := make(chan time.Time)
			waits := make(chan time.Duration, 16)
			g := &group[int, int]{
				lock:   l.Lock,
				gather: gather,
				after: func(d time.Duration) <-chan time.Time {
					waits <- d
					return fire
				},
				exec: func(ctx context.Context, items []int) ([]int, []error) {
					mu.Lock()
					batches = append(batches, slices.Clone(items))
					mu.Unlock()
					return items, make([]error, len(items))
				},
			}
			// A first batch: from now on writes come "just after" it.
			if _, err := g.Do(context.Background(), 0, 1); err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			if gather > 0 {
				wg.Go(func() { g.Do(context.Background(), 1, 1) })
				// 1 leads, and waits holding the lock.
				if d := <-waits; d <= 0 || d > gather {
					t.Errorf("gather wait %s, want within (0, %s]", d, gather)
				}
				wg.Go(func() { g.Do(context.Background(), 2, 1) })
				waitGroupLen(t, func() bool { return g.Len() == 2 })
				wg.Go(func() { g.Do(context.Background(), 3, 1) })
				waitGroupLen(t, func() bool { return g.Len() == 3 })
				close(fire)
			} else {
				for i := 1; i <= 3; i++ {
					g.Do(context.Background(), i, 1) // each runs at once
				}
			}
			wg.Wait()
			want := "[[0] [1 2 3]]"
			if gather == 0 {
				want = "[[0] [1] [2] [3]]"
			}
			if got := fmt.Sprint(batches); got != want {
				t.Fatalf("batches = %s, want %s", got, want)
			}
		})
	}
}
