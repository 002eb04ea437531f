package proxy

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/merge"
)

// Retry-After values, in seconds, of the answers that ask a client to come
// back later.
const (
	retryAfterLockTimeout = 5 // the lock was busy for lock_timeout
	retryAfterQueueFull   = 1 // too many writes waiting already
)

// ledger is one ledger Fava serves and the state favaproxy keeps for it.
type ledger struct {
	slug string
	cfg  config.Ledger
	// lock is the ledger's readers–writer lock (across processes when
	// configured so): writes hold it exclusively, reads shared.
	lock Locker
	// users orders each user's writes; taken before lock, never after.
	users userLocks
	// waiting counts writes that wait for a user or the ledger lock,
	// bounded by limits.queue_depth.
	waiting atomic.Int64
	// adds is the add_entries state: group commit and keys in flight
	// (idempotency.go).
	adds addState
	// versions remembers texts of the ledger's files by checksum
	// (merge.cache_bytes), for three-way merges of stale PUT source.
	versions *merge.Versions
	// index knows the ledger's files, open accounts, entry slices and
	// idempotency keys. It is the ledger's one index, used by every write;
	// writes refresh it holding the ledger lock.
	index *beancount.Index
	// journal is the ledger's journal of writes (audit.go), opened on
	// first use.
	journal journalOnce
	// style is the fava.Style of Fava's last classified answer, for the
	// answers favaproxy writes itself.
	style atomic.Int32
}

// lockErr turns the error of a lock wait bounded by lctx into what the
// client is told: 503 with Retry-After when lock_timeout passed, ECanceled
// (logged as 499, never sent) when the client left, 503 for a lock that
// failed by itself.
func lockErr(lctx context.Context, what string, err error) error {
	switch {
	case errors.Is(lctx.Err(), context.DeadlineExceeded):
		return rejectAs(metricRejectLockTimeout, withRetryAfter(fmt.Errorf("acquire %s: %w", what,
			favaproxy.Errorf(favaproxy.EUnavailable, "the ledger is busy; retry later")), retryAfterLockTimeout))
	case lctx.Err() != nil:
		return fmt.Errorf("acquire %s: %w", what,
			favaproxy.Errorf(favaproxy.ECanceled, "client closed the request while waiting"))
	default:
		return withRetryAfter(fmt.Errorf("acquire %s: %w: %w", what,
			favaproxy.Errorf(favaproxy.EUnavailable, "the ledger lock is unavailable"), err), retryAfterLockTimeout)
	}
}

// rlock takes l's shared lock for a read, waiting at most timeout.
func (l *ledger) rlock(ctx context.Context, timeout time.Duration) (func(), error) {
	lctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	release, err := l.lock.RLock(lctx)
	if err != nil {
		return nil, lockErr(lctx, "shared ledger lock", err)
	}
	return release, nil
}
