package ledger

import (
	"context"
	"sync"

	"github.com/favaproxy/favaproxy"
)

// userLocks holds one mutex per user of a ledger, so that one user's writes
// run in the order they arrive and a user has at most one write waiting for
// the ledger lock. An entry lives only while someone holds or waits for it
// (reference counted), so the map never grows beyond the writes in flight.
type userLocks struct {
	// mu guards m and every entry's refs.
	mu sync.Mutex
	m  map[favaproxy.User]*userLock
}

type userLock struct {
	sem  chan struct{} // holds one token while the lock is held
	refs int           // holders and waiters
}

// lock takes u's lock, or returns ctx's error if ctx ends first.
func (l *userLocks) lock(ctx context.Context, u favaproxy.User) (release func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = make(map[favaproxy.User]*userLock)
	}
	ul := l.m[u]
	if ul == nil {
		ul = &userLock{sem: make(chan struct{}, 1)}
		l.m[u] = ul
	}
	ul.refs++
	l.mu.Unlock()

	select {
	case ul.sem <- struct{}{}:
		return sync.OnceFunc(func() {
			<-ul.sem
			l.unref(u, ul)
		}), nil
	case <-ctx.Done():
		l.unref(u, ul)
		return nil, ctx.Err()
	}
}

func (l *userLocks) unref(u favaproxy.User, ul *userLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ul.refs--
	if ul.refs == 0 {
		delete(l.m, u)
	}
}

// len reports how many users hold or wait for a lock.
func (l *userLocks) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}
