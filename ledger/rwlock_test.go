package ledger

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRWLock(t *testing.T) {
	ctx := context.Background()
	t.Run("WriterWaitsForReaders", func(t *testing.T) {
		l := NewRWLock().(*rwLock)
		r1, _ := l.RLock(ctx)
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if _, err := l.Lock(short); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock during a read: %v, want deadline exceeded", err)
		}
		r1()
		w, err := l.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w()
	})
	t.Run("WaitingWriterHoldsBackNewReaders", func(t *testing.T) {
		l := NewRWLock().(*rwLock)
		r1, _ := l.RLock(ctx)
		got := make(chan func(), 1)
		go func() {
			w, _ := l.Lock(ctx)
			got <- w
		}()
		waitFor(t, "the writer to wait", func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			return l.waitingWriters == 1
		})
		short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		if _, err := l.RLock(short); err == nil {
			t.Fatal("a new reader passed a waiting writer")
		}
		r1()
		(<-got)()
	})
	t.Run("GivingUpWriterLetsReadersIn", func(t *testing.T) {
		l := NewRWLock().(*rwLock)
		r1, _ := l.RLock(ctx)
		wctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			_, err := l.Lock(wctx)
			errc <- err
		}()
		waitFor(t, "the writer to wait", func() bool {
			l.mu.Lock()
			defer l.mu.Unlock()
			return l.waitingWriters == 1
		})
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Lock: %v, want canceled", err)
		}
		r2, err := l.RLock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		r1()
		r2()
	})
}

// waitFor polls cond until it holds, failing the test after 5 s.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRWLockTryRLock(t *testing.T) {
	ctx := context.Background()
	l := NewRWLock().(*rwLock)
	r1, ok := l.TryRLock()
	if !ok {
		t.Fatal("TryRLock of a free lock: refused")
	}
	got := make(chan func(), 1)
	go func() {
		w, _ := l.Lock(ctx)
		got <- w
	}()
	for {
		l.mu.Lock()
		waiting := l.waitingWriters
		l.mu.Unlock()
		if waiting > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if r, ok := l.TryRLock(); ok {
		r()
		t.Fatal("TryRLock while a writer waits: ok, want a refusal")
	}
	r1()
	w := <-got
	if r, ok := l.TryRLock(); ok {
		r()
		t.Fatal("TryRLock while a writer holds the lock: ok, want a refusal")
	}
	w()
	r2, ok := l.TryRLock()
	if !ok {
		t.Fatal("TryRLock after the writer left: refused")
	}
	r2()
}
