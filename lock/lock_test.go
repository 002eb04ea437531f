package lock_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/lock"
)

func newLock(tb testing.TB) *lock.File {
	tb.Helper()
	return lock.New(filepath.Join(tb.TempDir(), ".main.beancount.favaproxy.lock"))
}

func mustLock(tb testing.TB, acquire func(context.Context) (func(), error)) func() {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	release, err := acquire(ctx)
	if err != nil {
		tb.Fatalf("acquire: %v", err)
	}
	return release
}

// holders counts concurrent holders of each kind and records violations.
type holders struct {
	writers, readers atomic.Int64
	maxWriters       atomic.Int64
	maxReaders       atomic.Int64
	readDuringWrite  atomic.Int64
}

func (h *holders) write() {
	w := h.writers.Add(1)
	if h.readers.Load() != 0 {
		h.readDuringWrite.Add(1)
	}
	storeMax(&h.maxWriters, w)
	time.Sleep(50 * time.Microsecond) // widen the window in which an overlap would show
	h.writers.Add(-1)
}

func (h *holders) read() {
	r := h.readers.Add(1)
	if h.writers.Load() != 0 {
		h.readDuringWrite.Add(1)
	}
	storeMax(&h.maxReaders, r)
	time.Sleep(200 * time.Microsecond)
	h.readers.Add(-1)
}

func storeMax(m *atomic.Int64, v int64) {
	for {
		old := m.Load()
		if v <= old || m.CompareAndSwap(old, v) {
			return
		}
	}
}

func TestExclusionBetweenGoroutines(t *testing.T) {
	l := newLock(t)
	var h holders
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for range 50 {
				if i%4 == 0 {
					release := mustLock(t, l.Lock)
					h.write()
					release()
				} else {
					release := mustLock(t, l.RLock)
					h.read()
					release()
				}
			}
		})
	}
	wg.Wait()
	if got := h.maxWriters.Load(); got != 1 {
		t.Errorf("max concurrent writers = %d, want 1", got)
	}
	if got := h.readDuringWrite.Load(); got != 0 {
		t.Errorf("readers overlapped writers %d times, want 0", got)
	}
	if got := h.maxReaders.Load(); got < 2 {
		t.Errorf("max concurrent readers = %d, want readers to share the lock", got)
	}
}

func TestReadersShare(t *testing.T) {
	l := newLock(t)
	r1 := mustLock(t, l.RLock)
	r2 := mustLock(t, l.RLock) // would time out if readers excluded each other
	r1()
	r2()
	w := mustLock(t, l.Lock) // the shared file lock was released by the last reader
	w()
}

func TestWriterPreferred(t *testing.T) {
	// A writer waiting behind a reader blocks readers that arrive after it.
	l := newLock(t)
	r1 := mustLock(t, l.RLock)

	writerHas := make(chan func())
	go func() { writerHas <- mustLock(t, l.Lock) }()
	waitQueued(t, l)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := l.RLock(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RLock behind a waiting writer: err = %v, want DeadlineExceeded", err)
	}
	r1()
	(<-writerHas)()
}

// waitQueued polls until a writer is queued on l, that is, until a reader
// can no longer get in without waiting.
func waitQueued(tb testing.TB, l *lock.File) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		release, err := l.RLock(ctx)
		cancel()
		if err != nil {
			return
		}
		release()
		time.Sleep(time.Millisecond)
	}
	tb.Fatal("writer never queued")
}

func TestCancelFreesPlace(t *testing.T) {
	l := newLock(t)
	held := mustLock(t, l.Lock)

	// A waiter whose ctx ends gets an error wrapping ctx.Err() and holds
	// nothing; a waiter queued behind it gets the lock once it is free.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	started := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		close(started)
		release, err := l.Lock(ctx)
		if err == nil {
			release()
		}
		errc <- err
	}()
	<-started
	laterHas := make(chan func(), 1)
	go func() { laterHas <- mustLock(t, l.Lock) }()
	if err := <-errc; !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timed-out Lock: err = %v, want DeadlineExceeded", err)
	}
	held()
	select {
	case release := <-laterHas:
		release()
	case <-time.After(10 * time.Second):
		t.Fatal("later waiter never got the lock after the timed-out one left")
	}

	// Same for readers: a reader that gives up while a writer holds the lock
	// leaves both modes usable.
	held = mustLock(t, l.Lock)
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := l.RLock(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("RLock with a cancelled ctx: err = %v, want Canceled", err)
	}
	held()
	mustLock(t, l.RLock)()
	mustLock(t, l.Lock)()
}

func TestReleaseIdempotent(t *testing.T) {
	l := newLock(t)
	r := mustLock(t, l.RLock)
	r2 := mustLock(t, l.RLock)
	r()
	r() // must not count as r2's release
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := l.Lock(ctx); err == nil {
		t.Fatal("Lock succeeded while a reader still holds the lock")
	}
	r2()
	w := mustLock(t, l.Lock)
	w()
	w()
	mustLock(t, l.Lock)()
}

func TestCheck(t *testing.T) {
	l := newLock(t)
	if err := l.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	bad := lock.New(filepath.Join(t.TempDir(), "missing-dir", "x.lock"))
	if err := bad.Check(); err == nil {
		t.Fatal("Check of a lock file in a missing directory succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := bad.Lock(ctx); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock of an unopenable file: err = %v, want the open error", err)
	}
	path := filepath.Join(t.TempDir(), "x.lock")
	if got, want := lock.New(path).Path(), path; got != want {
		t.Fatalf("Path() = %q, want %q", got, want)
	}
}
