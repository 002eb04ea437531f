package lock_test

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/lock"
)

// TestOverlappingReaderNeedsNoFlock pins the hot path of reads: a reader
// that joins readers already in, while no writer announces a wait, makes no
// flock(2) call; once the turnstile was last passed GateInterval ago, the
// next reader passes it again.
func TestOverlappingReaderNeedsNoFlock(t *testing.T) {
	flocks := lock.CountFlocks(t)
	l := newLock(t)
	lock.SetGateInterval(l, time.Hour)
	held := mustLock(t, l.RLock)
	before := flocks.Load()
	for range 100 {
		mustLock(t, l.RLock)()
	}
	if got := flocks.Load() - before; got != 0 {
		t.Fatalf("100 overlapping readers made %d flock calls, want 0", got)
	}

	lock.SetGateInterval(l, 0)
	mustLock(t, l.RLock)()
	if got := flocks.Load() - before; got != 2 {
		t.Fatalf("a reader past GateInterval made %d flock calls, want 2 (the turnstile)", got)
	}
	held()

	// The file lock lingers after the last reader: the next one joins it.
	lock.SetGateInterval(l, time.Hour)
	before = flocks.Load()
	mustLock(t, l.RLock)()
	if got := flocks.Load() - before; got != 0 {
		t.Fatalf("a reader while the shared lock lingers made %d flock calls, want 0", got)
	}
}

// TestLingeringSharedLock: the shared file lock outlives the last reader
// for the linger time, then is dropped; it is dropped at once when a writer
// announces a wait as the last reader leaves, and before a writer of the
// process takes the lock.
func TestLingeringSharedLock(t *testing.T) {
	l := newLock(t)
	other := lock.New(l.Path()) // another open file description: another process, to flock
	lock.SetLinger(l, time.Hour)
	mustLock(t, l.RLock)()
	blocked(t, "Lock of another process while the shared lock lingers", other.Lock)
	mustLock(t, l.Lock)() // the process's own writer drops it first

	lock.SetLinger(l, 10*time.Millisecond)
	mustLock(t, l.RLock)()
	mustLock(t, other.Lock)() // within the linger time and a poll

	lock.SetLinger(l, time.Hour)
	held := mustLock(t, l.RLock)
	got := make(chan func(), 1)
	go func() { got <- mustLock(t, other.Lock) }()
	deadline := time.Now().Add(10 * time.Second)
	for !announced(t, l.Path()+lock.GateSuffix).After(time.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("the waiting writer did not announce itself")
		}
		time.Sleep(time.Millisecond)
	}
	held()
	select {
	case release := <-got:
		release()
	case <-time.After(10 * time.Second):
		t.Fatal("the last reader left while a writer waited, and the writer did not get the lock")
	}
}

// TestAnnouncedWriterStopsJoiningReaders: a writer's announcement in the
// turnstile file sends the next reader through the turnstile, even one that
// could join readers already in.
func TestAnnouncedWriterStopsJoiningReaders(t *testing.T) {
	flocks := lock.CountFlocks(t)
	l := newLock(t)
	lock.SetGateInterval(l, time.Hour)
	held := mustLock(t, l.RLock)
	defer held()
	announce(t, l.Path()+lock.GateSuffix, time.Now().Add(time.Minute))
	before := flocks.Load()
	mustLock(t, l.RLock)()
	if got := flocks.Load() - before; got != 2 {
		t.Fatalf("a reader while a writer announces made %d flock calls, want 2 (the turnstile)", got)
	}
	// An announcement that ran out stops nobody.
	announce(t, l.Path()+lock.GateSuffix, time.Now().Add(-time.Second))
	before = flocks.Load()
	mustLock(t, l.RLock)()
	if got := flocks.Load() - before; got != 0 {
		t.Fatalf("a reader after the announcement ended made %d flock calls, want 0", got)
	}
}

// announce writes "a writer waits until until" into the turnstile file, as
// another process's writer would.
func announce(tb testing.TB, gate string, until time.Time) {
	tb.Helper()
	f, err := os.OpenFile(gate, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var b [8]byte
	binary.NativeEndian.PutUint64(b[:], uint64(until.UnixNano()))
	if _, err := f.WriteAt(b[:], 0); err != nil {
		tb.Fatal(err)
	}
}

// announced reads the turnstile file's announcement.
func announced(tb testing.TB, gate string) time.Time {
	tb.Helper()
	b, err := os.ReadFile(gate)
	if err != nil {
		tb.Fatal(err)
	}
	if len(b) < 8 {
		return time.Time{}
	}
	return time.Unix(0, int64(binary.NativeEndian.Uint64(b[:8])))
}

// TestWriterWaitingAnnounced: a writer that waits for readers announces it
// in the turnstile file for as long as it waits, and withdraws the
// announcement once it holds the lock.
func TestWriterWaitingAnnounced(t *testing.T) {
	l := newLock(t)
	held := mustLock(t, l.RLock)
	w := lock.New(l.Path()) // another File on the same lock file: another process, to flock
	got := make(chan func(), 1)
	go func() { got <- mustLock(t, w.Lock) }()
	deadline := time.Now().Add(10 * time.Second)
	for !announced(t, l.Path()+lock.GateSuffix).After(time.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("a waiting writer did not announce itself")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(3 * lock.RetryDelay)
	if !announced(t, l.Path()+lock.GateSuffix).After(time.Now()) {
		t.Fatal("the announcement of a writer still waiting ran out")
	}
	held()
	release := <-got
	defer release()
	if a := announced(t, l.Path()+lock.GateSuffix); a.UnixNano() != 0 {
		t.Fatalf("announcement %v while the writer holds the lock, want none", a)
	}
}

// TestTryRLock: TryRLock joins readers already in, and holds nothing when
// it would have to wait or pass the turnstile: no reader in, or a writer of
// this process waiting.
func TestTryRLock(t *testing.T) {
	l := newLock(t)
	lock.SetGateInterval(l, time.Hour)
	if release, ok := l.TryRLock(); ok {
		release()
		t.Fatal("TryRLock with no reader in: ok, want a refusal (the file lock needs a system call)")
	}
	held := mustLock(t, l.RLock)
	release, ok := l.TryRLock()
	if !ok {
		t.Fatal("TryRLock beside a reader: refused, want ok")
	}
	release()

	got := make(chan func(), 1)
	go func() { got <- mustLock(t, l.Lock) }()
	waitQueued(t, l)
	if release, ok := l.TryRLock(); ok {
		release()
		t.Fatal("TryRLock while a writer waits: ok, want a refusal")
	}
	held()
	(<-got)()
	mustLock(t, l.RLock)()
}

// TestTruncatedTurnstileDoesNotCrash: a turnstile file truncated under its
// mapping by something other than favaproxy (a fault, SIGBUS, on the next
// access to the announcement) leaves a working lock whose readers pass the
// turnstile, not a crashed process.
func TestTruncatedTurnstileDoesNotCrash(t *testing.T) {
	l := newLock(t)
	lock.SetGateInterval(l, time.Hour)
	held := mustLock(t, l.RLock) // maps the turnstile's announcement
	if err := os.Truncate(l.Path()+lock.GateSuffix, 0); err != nil {
		t.Fatal(err)
	}
	flocks := lock.CountFlocks(t)
	mustLock(t, l.RLock)() // reads the announcement: faults
	if got := flocks.Load(); got != 2 {
		t.Errorf("a reader after the fault made %d flock calls, want 2 (the turnstile, passed)", got)
	}
	held()
	mustLock(t, l.Lock)() // announces: faults no more
	mustLock(t, l.RLock)()
}

// TestIdleDropRetried: the last reader of a process leaves while a writer
// of another process waits, just as the idle timer's drop of the shared
// flock runs (it found that reader still in). The reader's own drop gives
// way to the timer's, so it must be retried: otherwise the process keeps
// its shared flock with no reader in, and the writer, whose announcement
// keeps new readers from coming in to drop it, waits in vain.
func TestIdleDropRetried(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	a, b := lock.New(path), lock.New(path)
	read := mustLock(t, a.RLock)
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		release, err := b.Lock(ctx)
		if err == nil {
			release()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond) // b announces its wait
	endDrop := lock.BeginIdleDrop(a)
	read()
	endDrop()
	if err := <-done; err != nil {
		t.Fatalf("writer of the other process: %v", err)
	}
}

// TestTimedOutWriterWithdraws: a writer of another process that gives up
// waiting withdraws its announcement, so the readers it waited for go on
// joining each other without a system call at once, not only once the
// announcement has run out.
func TestTimedOutWriterWithdraws(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	a, b := lock.New(path), lock.New(path)
	lock.SetGateInterval(a, time.Hour)
	read := mustLock(t, a.RLock)
	defer read()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := b.Lock(ctx)
	cancel()
	if err == nil {
		t.Fatal("the writer got the lock while a reader of another process held it")
	}
	flocks := lock.CountFlocks(t)
	mustLock(t, a.RLock)()
	if got := flocks.Load(); got != 0 {
		t.Errorf("a reader joining right after the writer gave up made %d flock calls, want 0", got)
	}
}
