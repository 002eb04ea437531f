package ledger

import (
	"context"
	"sync"
	"time"
)

// group is group commit for one ledger: writes that arrive while another
// write holds the ledger lock queue up, and whoever gets the lock next takes
// every queued write (up to maxItems and maxBytes, in arrival order) and
// executes them as one batch. A write's caller either leads a batch or finds
// its write done by another leader; either way it gets its own result.
//
// The lock is taken by the callers, never by a goroutine of the group, so a
// caller's context bounds its own wait and nothing runs without an owner.
type group[T, R any] struct {
	// lock takes the ledger lock; the group calls it with a context that
	// also ends when the caller's job was done by another leader.
	lock func(ctx context.Context) (release func(), err error)
	// exec runs one batch under the ledger lock and returns one result and
	// error per item, in order. It runs under a context that is not canceled
	// when a client goes away: a write that started is finished.
	exec func(ctx context.Context, items []T) ([]R, []error)
	// maxItems caps the items in one batch. Zero means no cap.
	maxItems int
	// solo, if set, marks items that run in a batch of their own.
	solo func(T) bool
	// maxBytes caps the summed sizes of the items in one batch; a single
	// item larger than maxBytes still runs, alone. Zero means no cap.
	maxBytes int64
	// gather is how long after a batch ends the next leader waits, holding
	// the lock, before it takes its batch, so that the writers the last
	// batch answered, who send their next writes at about the same moment,
	// join it. Without it, writers that wait for their answers settle into
	// two halves that alternate, each batch half the size it could be. A
	// leader that comes later than gather after the last batch does not
	// wait. Zero means no wait.
	gather time.Duration
	// after is time.After; tests replace it.
	after func(time.Duration) <-chan time.Time

	// mu guards pending and lastDone.
	mu       sync.Mutex
	pending  []*groupJob[T, R]
	lastDone time.Time // when the last batch ended
}

type groupJob[T, R any] struct {
	item T
	size int64
	done chan struct{} // closed once res and err are set
	res  R
	err  error
}

// Len reports how many writes are queued and not yet taken by a leader.
func (g *group[T, R]) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.pending)
}

// Do queues item and returns its result once it has been executed, by this
// caller as the leader of a batch or by another caller. If ctx ends while the
// item is still queued, Do withdraws it and returns the lock's error; once a
// leader has taken the item, Do waits for its result whatever ctx says.
func (g *group[T, R]) Do(ctx context.Context, item T, size int64) (R, error) {
	j := &groupJob[T, R]{item: item, size: size, done: make(chan struct{})}
	g.mu.Lock()
	g.pending = append(g.pending, j)
	g.mu.Unlock()

	for {
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-j.done:
				cancel()
			case <-lctx.Done():
			}
		}()
		release, err := g.lock(lctx)
		cancel()
		select {
		case <-j.done:
			if err == nil {
				release()
			}
			return j.res, j.err
		default:
		}
		if err != nil {
			if g.withdraw(j) {
				var zero R
				return zero, err
			}
			// A leader took the item after the wait failed: it will be
			// written, so its result is the answer.
			<-j.done
			return j.res, j.err
		}
		g.lead(ctx, release)
		select {
		case <-j.done:
			return j.res, j.err
		default:
			// The batch was full before this item: lead again.
		}
	}
}

// lead takes a batch off the queue, executes it and releases the lock.
func (g *group[T, R]) lead(ctx context.Context, release func()) {
	defer release()
	g.mu.Lock()
	wait := time.Duration(0)
	if g.gather > 0 && !g.lastDone.IsZero() {
		wait = g.gather - time.Since(g.lastDone)
	}
	g.mu.Unlock()
	if wait > 0 {
		after := g.after
		if after == nil {
			after = time.After
		}
		// Bounded by gather, and the queued writes wait for this lock
		// anyway: not worth a cancellation path.
		<-after(wait)
	}
	batch := g.take()
	if len(batch) == 0 {
		return
	}
	items := make([]T, len(batch))
	for i, j := range batch {
		items[i] = j.item
	}
	res, errs := g.exec(context.WithoutCancel(ctx), items)
	g.mu.Lock()
	g.lastDone = time.Now()
	g.mu.Unlock()
	for i, j := range batch {
		if i < len(res) {
			j.res = res[i]
		}
		if i < len(errs) {
			j.err = errs[i]
		}
		close(j.done)
	}
}

// take removes the next batch from the front of the queue.
func (g *group[T, R]) take() []*groupJob[T, R] {
	g.mu.Lock()
	defer g.mu.Unlock()
	n, bytes := 0, int64(0)
	for _, j := range g.pending {
		if g.maxItems > 0 && n == g.maxItems {
			break
		}
		if g.solo != nil && g.solo(j.item) {
			if n == 0 {
				n = 1
			}
			break
		}
		if g.maxBytes > 0 && n > 0 && bytes+j.size > g.maxBytes {
			break
		}
		n++
		bytes += j.size
	}
	batch := make([]*groupJob[T, R], n)
	copy(batch, g.pending[:n])
	rest := copy(g.pending, g.pending[n:])
	clear(g.pending[rest:])
	g.pending = g.pending[:rest]
	return batch
}

// withdraw removes j from the queue and reports whether it was still there.
func (g *group[T, R]) withdraw(j *groupJob[T, R]) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, p := range g.pending {
		if p == j {
			g.pending = append(g.pending[:i], g.pending[i+1:]...)
			return true
		}
	}
	return false
}
