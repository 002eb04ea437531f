// Package lock provides the readers–writer lock of one ledger, spanning the
// goroutines of this process and every other process that locks the same
// lock file (other favaproxy instances, `favaproxy lock -- CMD`).
//
// A File lock is three locks taken in a fixed order:
//
//  1. an in-process lock, a FIFO weighted semaphore: a writer takes its whole
//     weight, a reader one unit. Waits honour ctx;
//  2. the turnstile, a flock(2) lock on <lock file>.gate: a writer holds it
//     exclusively while it waits for the lock file; every reader passes
//     through it (takes it shared and drops it at once) before it counts as
//     a reader. So a writer waiting in one process stops new readers in all
//     processes, and the readers already in drain away;
//  3. a flock(2) lock, through github.com/gofrs/flock, on the dedicated lock
//     file beside the ledger (never the ledger itself: editors that save by
//     rename replace its inode). A writer takes it exclusively; the first
//     reader of the process takes it shared and the last reader releases
//     it. gofrs/flock opens the file by its path for each lock and closes
//     it on unlock, so a lock file removed and created again is picked up.
//
// The turnstile is passed by every reader, so it is the one lock on the hot
// path of reads, and readers pass it concurrently on one open file
// description. Its descriptor is therefore opened once and kept (a writer
// reopens it if the path names another file), and taken with flock(2)
// directly: gofrs/flock would open and close the file for every pass and
// keeps one locked state per Flock, not one per passing reader. A reader
// that joins the readers already in costs two non-blocking flock calls on
// the open descriptor and no open or close.
//
// The in-process lock always comes first, because flock(2) locks belong to
// an open file description, which is not a mutex between goroutines: a second
// lock on a locked descriptor succeeds at once. Release runs in the reverse
// order.
//
// The lock is not reentrant: a holder that asks again (for example a
// `favaproxy lock --shared` whose command runs another one on the same
// ledger) waits behind any writer that queued in between, until one of the
// two gives up at its timeout.
package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/gofrs/flock"
	"golang.org/x/sync/semaphore"
)

// RetryDelay is how often a waiter polls a file lock. flock(2) offers no
// wait with a deadline, so waits poll with LOCK_NB. The kernel drops the lock
// of a process that dies (even by SIGKILL), so a waiter takes over within
// about RetryDelay of the holder's death.
const RetryDelay = 5 * time.Millisecond

// GateSuffix is appended to the lock file's path to name the turnstile file.
const GateSuffix = ".gate"

// fileMode is the mode of the lock files, created on first use. They carry
// no data; 0644 lets other users' `favaproxy lock` open them to take shared
// and exclusive flocks (flock needs only a read descriptor).
const fileMode = 0o644

// writerWeight is the semaphore weight a writer takes: all of it. Readers
// take one unit each, so up to writerWeight readers share the lock.
const writerWeight = 1 << 30

// File is the lock of one ledger: an in-process writer-preferring RW lock
// whose waits honour ctx, in front of flock(2) locks on a dedicated lock
// file beside the ledger and its turnstile.
//
// It is writer-preferring. Within a process, because the semaphore is FIFO:
// a writer waiting for the readers in front of it blocks every reader that
// arrives after it. Between processes, because of the turnstile: a writer
// waiting in another process blocks new readers here, so readers that
// overlap without pause cannot keep a process's shared lock for ever.
// Writers among themselves take turns as flock(2) gives them, which is not
// FIFO across processes.
//
// The zero value is not usable; call New.
type File struct {
	path, gatePath string
	sem            *semaphore.Weighted // in-process lock, taken before anything else

	// rmu guards readers and the shared state of file. It is a semaphore of
	// one rather than a sync.Mutex so that a reader waiting behind the first
	// reader (which may wait long for the file lock) still honours its ctx.
	rmu     *semaphore.Weighted
	readers int // in-process readers holding the lock; guarded by rmu

	// file is the lock file. It is locked and unlocked only by a writer
	// (holding all of sem) or by a reader while readers is 0 or drops to 0
	// (holding rmu and a unit of sem, so no writer of this process runs):
	// never by two goroutines at once.
	file *flock.Flock

	// gmu guards gate, the turnstile file, opened on first use. Readers
	// holding a unit of sem use it concurrently (passing the turnstile on
	// one open file description is harmless: the pass only checks that no
	// writer holds it); only a writer, holding all of sem, replaces it.
	gmu  sync.Mutex
	gate *lockFile
}

// New returns the lock whose file is path (config.Ledger.LockPath()); its
// turnstile is path+GateSuffix. Both files are created with mode 0644 on
// first use.
func New(path string) *File {
	return &File{
		path:     path,
		gatePath: path + GateSuffix,
		file:     flock.New(path, flock.SetPermissions(fileMode)),
		sem:      semaphore.NewWeighted(writerWeight),
		rmu:      semaphore.NewWeighted(1),
	}
}

// Path returns the lock file's path.
func (l *File) Path() string { return l.path }

// Lock takes the lock exclusively: first in-process, then the turnstile
// (closing it to new readers everywhere), then the exclusive file lock, then
// it reopens the turnstile. When ctx ends before it holds the lock it returns
// an error wrapping ctx.Err() and holds nothing. release may be called any
// number of times; it never blocks.
func (l *File) Lock(ctx context.Context) (release func(), err error) {
	if err := l.sem.Acquire(ctx, writerWeight); err != nil {
		return nil, l.waitErr("exclusive", err)
	}
	// Holding all of sem, no other goroutine of this process uses the
	// turnstile: it may be reopened.
	l.gmu.Lock()
	l.gate, err = current(l.gate, l.gatePath)
	gate := l.gate
	l.gmu.Unlock()
	if err != nil {
		l.sem.Release(writerWeight)
		return nil, l.waitErr("exclusive", err)
	}
	if err := poll(ctx, gate, syscall.LOCK_EX); err != nil {
		l.sem.Release(writerWeight)
		return nil, l.waitErr("exclusive", err)
	}
	_, err = l.file.TryLockContext(ctx, RetryDelay)
	gate.unlock()
	if err != nil {
		l.sem.Release(writerWeight)
		return nil, l.waitErr("exclusive", err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = l.file.Unlock()
			l.sem.Release(writerWeight)
		})
	}, nil
}

// RLock takes the lock shared: first in-process, then it passes the
// turnstile (waiting while a writer anywhere waits), then, for the first
// reader of the process, the shared file lock, which the last reader
// releases. Errors and release behave as for Lock.
func (l *File) RLock(ctx context.Context) (release func(), err error) {
	if err := l.sem.Acquire(ctx, 1); err != nil {
		return nil, l.waitErr("shared", err)
	}
	l.gmu.Lock()
	if l.gate == nil {
		l.gate, err = openLockFile(l.gatePath)
	}
	gate := l.gate
	l.gmu.Unlock()
	if err == nil {
		err = poll(ctx, gate, syscall.LOCK_SH)
	}
	if err != nil {
		l.sem.Release(1)
		return nil, l.waitErr("shared", err)
	}
	gate.unlock()
	if err := l.rmu.Acquire(ctx, 1); err != nil {
		l.sem.Release(1)
		return nil, l.waitErr("shared", err)
	}
	if l.readers == 0 {
		if _, err := l.file.TryRLockContext(ctx, RetryDelay); err != nil {
			l.rmu.Release(1)
			l.sem.Release(1)
			return nil, l.waitErr("shared", err)
		}
	}
	l.readers++
	l.rmu.Release(1)

	var once sync.Once
	return func() {
		once.Do(func() {
			// rmu is only ever held long by a reader waiting for the file
			// lock, which happens only while readers == 0, that is, never
			// while a release is due. So this wait is short.
			_ = l.rmu.Acquire(context.Background(), 1)
			l.readers--
			if l.readers == 0 {
				_ = l.file.Unlock()
			}
			l.rmu.Release(1)
			l.sem.Release(1)
		})
	}, nil
}

// Check reports whether the lock file and its turnstile can be opened
// (created if missing), for readiness probes. It takes no lock.
func (l *File) Check() error {
	for _, p := range []string{l.path, l.gatePath} {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_RDONLY, fileMode)
		if err != nil {
			return fmt.Errorf("open lock file: %w", err)
		}
		f.Close()
	}
	return nil
}

// lockFile is an open lock file and its descriptor, kept for flock(2).
type lockFile struct {
	f  *os.File
	fd int
}

func openLockFile(path string) (*lockFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY|syscall.O_CLOEXEC, fileMode)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	return &lockFile{f: f, fd: int(f.Fd())}, nil
}

// current returns lf if path still names its file, else path opened
// (created if missing); lf, if any, is closed then, which drops any lock it
// held. No other goroutine may be using lf.
func current(lf *lockFile, path string) (*lockFile, error) {
	if lf != nil {
		cur, err := os.Stat(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return lf, fmt.Errorf("stat lock file: %w", err)
		}
		mine, err := lf.f.Stat()
		if err != nil {
			return lf, fmt.Errorf("stat lock file: %w", err)
		}
		if cur != nil && os.SameFile(cur, mine) {
			return lf, nil
		}
	}
	next, err := openLockFile(path)
	if err != nil {
		return lf, err
	}
	if lf != nil {
		lf.f.Close()
	}
	return next, nil
}

// try takes the flock how (LOCK_SH or LOCK_EX) without blocking and reports
// whether it holds it.
func (lf *lockFile) try(how int) (bool, error) {
	for {
		err := syscall.Flock(lf.fd, how|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, syscall.EINTR):
			continue
		}
		return false, fmt.Errorf("flock %s: %w", lf.f.Name(), err)
	}
}

// unlock drops the flock. flock(LOCK_UN) on a descriptor we hold does not
// fail in practice; if it ever did, the lock would be dropped at the latest
// when the descriptor is closed (a reopen, or the process's exit), so there
// is nothing better to do than carry on. The same holds for the lock file's
// Unlock (gofrs/flock then keeps the descriptor, and its state says locked,
// which it still is; the in-process lock in front keeps goroutines apart).
func (lf *lockFile) unlock() {
	for syscall.Flock(lf.fd, syscall.LOCK_UN) == syscall.EINTR {
	}
}

// poll takes the flock how on lf, polling every RetryDelay, until it holds
// it or ctx ends.
func poll(ctx context.Context, lf *lockFile, how int) error {
	var t *time.Timer
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ok, err := lf.try(how)
		if err != nil || ok {
			return err
		}
		if t == nil {
			t = time.NewTimer(RetryDelay)
			defer t.Stop()
		} else {
			t.Reset(RetryDelay)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (l *File) waitErr(mode string, err error) error {
	return fmt.Errorf("acquire %s lock %s: %w", mode, l.path, err)
}
