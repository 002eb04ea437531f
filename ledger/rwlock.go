package ledger

import (
	"context"
	"sync"
)

// Locker is a ledger's readers–writer lock. Both methods wait until the lock
// is taken or ctx is done; on success the caller must call release exactly
// once. An implementation that spans processes (a lock file) must put an
// in-process lock in front of it.
//
// A Locker may also be a Checker (for /readyz) and a LossReporter (a lock
// that can be lost while held, such as a lease).
type Locker interface {
	// Lock takes the lock exclusively.
	Lock(ctx context.Context) (release func(), err error)
	// RLock takes the lock shared.
	RLock(ctx context.Context) (release func(), err error)
}

// Checker is the optional health check of a Locker: whether the lock can be
// taken at all (for example, whether its file opens).
type Checker interface{ Check() error }

// TryRLocker is a Locker that can say at once whether it can take the lock
// shared without waiting, and take it then. A read asks it first, so that
// the common read (no writer about) sets up no deadline for a wait;
// release behaves as RLock's.
type TryRLocker interface {
	TryRLock() (release func(), ok bool)
}

// LossReporter is a Locker whose exclusive hold can be lost while held: a
// lease that expired because its holder could not renew it in time. Lost,
// called while this process holds the lock exclusively, returns a channel
// that is closed once that hold is lost. From then on the ledger sends
// nothing more to Fava and writes no file under that hold, and the write
// in progress is answered 503.
type LossReporter interface{ Lost() <-chan struct{} }

// Verifier is a Locker that can confirm, with the lock's own authority, that
// this process still holds it exclusively (a lock on etcd asks etcd and
// reads its fence file). The ledger calls Verify, holding the lock
// exclusively, immediately before every request it sends to Fava and every
// file it puts back from a pre-image; an error means the hold is lost.
type Verifier interface {
	Verify(ctx context.Context) error
}

// Fencer is a Locker whose exclusive holds carry a fencing token that
// grows with every hold by any process or host; the ledger records it in
// the journal records it appends under the lock.
type Fencer interface{ Token() int64 }

// rwLock is an in-process, writer-preferring readers–writer lock whose waits
// honour context cancellation: once a writer waits, new readers wait too, so
// a stream of reads never starves a write. It is the Locker used when no
// cross-process lock is configured.
type rwLock struct {
	// mu guards readers, writer, waitingWriters and changed.
	mu             sync.Mutex
	readers        int
	writer         bool
	waitingWriters int
	// changed is closed, and replaced, whenever the lock is released or a
	// waiting writer gives up, to wake every waiter to look again.
	changed chan struct{}
}

var (
	_ Locker     = (*rwLock)(nil)
	_ TryRLocker = (*rwLock)(nil)
)

// NewRWLock returns an in-process readers–writer lock: the Locker of a
// ledger that no other process writes.
func NewRWLock() Locker { return &rwLock{changed: make(chan struct{})} }

// broadcast wakes every waiter. l.mu must be held.
func (l *rwLock) broadcast() {
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *rwLock) Lock(ctx context.Context) (func(), error) {
	l.mu.Lock()
	waiting := false
	for l.writer || l.readers > 0 {
		if !waiting {
			waiting = true
			l.waitingWriters++
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
			l.mu.Lock()
		case <-ctx.Done():
			l.mu.Lock()
			l.waitingWriters--
			l.broadcast() // readers held back by this writer may go
			l.mu.Unlock()
			return nil, ctx.Err()
		}
	}
	if waiting {
		l.waitingWriters--
	}
	l.writer = true
	l.mu.Unlock()
	return sync.OnceFunc(func() {
		l.mu.Lock()
		l.writer = false
		l.broadcast()
		l.mu.Unlock()
	}), nil
}

// TryRLock takes the lock shared when no writer holds it or waits for it.
func (l *rwLock) TryRLock() (func(), bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.writer || l.waitingWriters > 0 {
		return nil, false
	}
	l.readers++
	return l.readRelease(), true
}

func (l *rwLock) RLock(ctx context.Context) (func(), error) {
	l.mu.Lock()
	for l.writer || l.waitingWriters > 0 {
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
			l.mu.Lock()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	l.readers++
	l.mu.Unlock()
	return l.readRelease(), nil
}

// readRelease returns the release of a reader that holds the lock.
func (l *rwLock) readRelease() func() {
	return sync.OnceFunc(func() {
		l.mu.Lock()
		l.readers--
		if l.readers == 0 {
			l.broadcast()
		}
		l.mu.Unlock()
	})
}
