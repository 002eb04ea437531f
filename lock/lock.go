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
//     reader of the process takes it shared, and it is released when the
//     last reader has been gone for GateInterval (at once if a writer
//     waits, and before a writer of the process takes it), so that reads
//     that follow each other closely do not take and drop it each time.
//     gofrs/flock opens the file by its path for each lock and closes it on
//     unlock, so a lock file removed and created again is picked up.
//
// A reader of a process that holds the shared file lock needs no system
// call: the process holds the file lock already, and the turnstile only
// matters when a writer waits. So a writer announces its wait in the
// turnstile file's first 8 bytes, mapped shared (mmap(2)) by every process
// that locks the file: "a writer waits until T" (Unix nanoseconds), which
// it pushes forward every RetryDelay while it waits. A reader skips the
// turnstile when the process holds the shared file lock, no announcement
// is in force and the process passed the turnstile within GateInterval;
// otherwise it passes it as described above. The announcement only decides
// who waits for whom: it never lets a reader hold the lock while a writer
// does, because the skipping reader joins a shared file lock its process
// holds, which no writer can hold at the same time. A writer that cannot
// announce (a lock file it may not write, an older favaproxy) still stops
// new readers everywhere within GateInterval, when their process next
// passes the turnstile; a writer that dies stops its announcement within
// announceFor.
//
// The turnstile's descriptor and mapping are opened once and kept (a writer
// reopens them if the path names another file), and it is taken with
// flock(2) directly: gofrs/flock would open and close the file for every
// pass and keeps one locked state per Flock, not one per passing reader.
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
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

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

// GateInterval is the longest a process's readers go without passing the
// turnstile: past it, the next reader passes it even when no writer has
// announced a wait. It bounds how long readers of a process can keep a
// writer waiting that could not announce itself.
const GateInterval = 20 * time.Millisecond

// announceFor is how far ahead a waiting writer's announcement runs: many
// times RetryDelay, so that a writer descheduled for a while still stops
// new readers, and short enough that the announcement of a writer that
// died ends soon.
const announceFor = 50 * time.Millisecond

// gateWordSize is the size of the announcement at the start of the turnstile
// file.
const gateWordSize = 8

// fileMode is the mode of the lock files, created on first use. They carry
// no data but the turnstile's announcement; 0644 lets other users'
// `favaproxy lock` open them to take shared and exclusive flocks (flock
// needs only a read descriptor; such a writer cannot announce its wait).
const fileMode = 0o644

// writerWeight is the semaphore weight a writer takes: all of it. Readers
// take one unit each, so up to writerWeight readers share the lock.
const writerWeight = 1 << 30

// flockFn is flock(2); tests count its calls.
var flockFn = syscall.Flock

// File is the lock of one ledger: an in-process writer-preferring RW lock
// whose waits honour ctx, in front of flock(2) locks on a dedicated lock
// file beside the ledger and its turnstile.
//
// It is writer-preferring. Within a process, because the semaphore is FIFO:
// a writer waiting for the readers in front of it blocks every reader that
// arrives after it. Between processes, because of the turnstile and the
// writer's announcement: a writer waiting in another process blocks new
// readers here, so readers that overlap without pause cannot keep a
// process's shared lock for ever. Writers among themselves take turns as
// flock(2) gives them, which is not FIFO across processes.
//
// The zero value is not usable; call New.
type File struct {
	path, gatePath string
	sem            *semaphore.Weighted // in-process lock, taken before anything else

	// rmu serializes whoever takes or drops the shared file lock: a reader
	// that passed the turnstile, the drop of a lingering lock and a writer
	// of this process. It is a semaphore of one rather than a sync.Mutex
	// so that a reader waiting behind the first reader (which may wait long
	// for the file lock) still honours its ctx.
	rmu *semaphore.Weighted
	// st is the process's shared hold: bit 0 is set while the process holds
	// the shared file lock, the rest counts the readers holding the lock
	// (st>>1). The bit is set and cleared only under rmu; readers join
	// (add 2) without rmu only while it is set, so a reader counted here
	// always shares a file lock this process holds. When the last reader
	// leaves, the file lock lingers for linger (see dropIdle), so that
	// reads one after another do not take and drop it each time.
	st atomic.Int64
	// idle runs dropIdle linger after the last reader left.
	idle *time.Timer

	// file is the lock file. It is locked and unlocked only by a writer
	// (holding all of sem), or under rmu: never by two goroutines at once.
	file *flock.Flock

	// gate is the turnstile file, opened on first use. Readers holding a
	// unit of sem use it concurrently (passing the turnstile on one open
	// file description is harmless: the pass only checks that no writer
	// holds it); only a writer, holding all of sem, replaces it. gmu
	// serializes its first opening.
	gmu  sync.Mutex
	gate atomic.Pointer[lockFile]
	// passed is when a reader of this process last passed the turnstile
	// (Unix nanoseconds).
	passed atomic.Int64
	// gateInterval is GateInterval and linger is how long the shared file
	// lock outlives the last reader, GateInterval too (tests change them).
	gateInterval, linger time.Duration
}

// New returns the lock whose file is path (config.Ledger.LockPath()); its
// turnstile is path+GateSuffix. Both files are created with mode 0644 on
// first use.
func New(path string) *File {
	l := &File{
		path:     path,
		gatePath: path + GateSuffix,
		file:     flock.New(path, flock.SetPermissions(fileMode)),
		sem:      semaphore.NewWeighted(writerWeight),
		rmu:      semaphore.NewWeighted(1),

		gateInterval: GateInterval,
		linger:       GateInterval,
	}
	l.idle = time.AfterFunc(time.Hour, l.dropIdle)
	l.idle.Stop()
	return l
}

// Path returns the lock file's path.
func (l *File) Path() string { return l.path }

// Lock takes the lock exclusively: first in-process, then, announcing its
// wait, the turnstile (closing it to new readers everywhere), then the
// exclusive file lock, then it reopens the turnstile. When ctx ends before
// it holds the lock it returns an error wrapping ctx.Err() and holds
// nothing. release may be called any number of times; it never blocks.
func (l *File) Lock(ctx context.Context) (release func(), err error) {
	if err := l.sem.Acquire(ctx, writerWeight); err != nil {
		return nil, l.waitErr("exclusive", err)
	}
	// Holding all of sem, no reader of this process holds the lock, but
	// the shared file lock may linger: drop it (under rmu, so that
	// dropIdle cannot drop the exclusive lock taken below).
	if err := l.rmu.Acquire(ctx, 1); err != nil {
		l.sem.Release(writerWeight)
		return nil, l.waitErr("exclusive", err)
	}
	if l.st.CompareAndSwap(1, 0) {
		_ = l.file.Unlock()
	}
	l.rmu.Release(1)
	// Holding all of sem, no other goroutine of this process uses the
	// turnstile: it may be reopened.
	l.gmu.Lock()
	gate, err := current(l.gate.Load(), l.gatePath)
	l.gate.Store(gate)
	l.gmu.Unlock()
	if err != nil {
		l.sem.Release(writerWeight)
		return nil, l.waitErr("exclusive", err)
	}
	if err := poll(ctx, gate, syscall.LOCK_EX, gate.announce); err != nil {
		// Given up: readers need not wait out the announcement. Writers
		// still waiting renew theirs within RetryDelay.
		gate.withdraw()
		l.sem.Release(writerWeight)
		return nil, l.waitErr("exclusive", err)
	}
	err = pollFile(ctx, l.file, gate.announce)
	// Held, no reader anywhere joins a shared lock while this one is, so
	// the announcement has done its work; given up, readers need not wait
	// it out. Writers still waiting renew theirs within RetryDelay.
	gate.withdraw()
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

// RLock takes the lock shared: first in-process; then, when this process
// holds the shared file lock, no writer has announced a wait and the
// turnstile was passed within GateInterval, it joins without a system call.
// Otherwise it passes the turnstile (waiting while a writer anywhere waits)
// and takes the shared file lock if the process does not hold it. Errors
// and release behave as for Lock.
func (l *File) RLock(ctx context.Context) (release func(), err error) {
	if err := l.sem.Acquire(ctx, 1); err != nil {
		return nil, l.waitErr("shared", err)
	}
	if l.join() {
		return l.readRelease(), nil
	}
	gate := l.gate.Load()
	if gate == nil {
		l.gmu.Lock()
		if gate = l.gate.Load(); gate == nil {
			if gate, err = openLockFile(l.gatePath); err == nil {
				l.gate.Store(gate)
			}
		}
		l.gmu.Unlock()
	}
	if err == nil {
		err = poll(ctx, gate, syscall.LOCK_SH, nil)
	}
	if err != nil {
		l.sem.Release(1)
		return nil, l.waitErr("shared", err)
	}
	gate.unlock()
	l.passed.Store(time.Now().UnixNano())
	if err := l.rmu.Acquire(ctx, 1); err != nil {
		l.sem.Release(1)
		return nil, l.waitErr("shared", err)
	}
	if l.st.Load()&1 == 0 {
		if _, err := l.file.TryRLockContext(ctx, RetryDelay); err != nil {
			l.rmu.Release(1)
			l.sem.Release(1)
			return nil, l.waitErr("shared", err)
		}
		l.st.Add(1)
	}
	l.st.Add(2)
	l.rmu.Release(1)
	return l.readRelease(), nil
}

// TryRLock takes the lock shared if it can at once and without a system
// call: when no writer of this process holds or waits for the lock and a
// reader could join without passing the turnstile (see RLock). Otherwise
// it holds nothing and ok is false. release behaves as RLock's.
func (l *File) TryRLock() (release func(), ok bool) {
	if !l.sem.TryAcquire(1) {
		return nil, false
	}
	if !l.join() {
		l.sem.Release(1)
		return nil, false
	}
	return l.readRelease(), true
}

// join counts one more reader without a system call when this process
// holds the shared file lock, the turnstile was passed within
// GateInterval and no writer announces a wait; it reports whether it did.
// The caller holds a unit of sem.
func (l *File) join() bool {
	now := time.Now().UnixNano()
	if now-l.passed.Load() >= int64(l.gateInterval) {
		return false
	}
	gate := l.gate.Load()
	if gate == nil {
		return false
	}
	if until, ok := gate.announced(); !ok || until > now {
		return false
	}
	for n := l.st.Load(); n&1 != 0; n = l.st.Load() {
		if l.st.CompareAndSwap(n, n+2) {
			return true
		}
	}
	return false
}

// readRelease returns the release of a reader. When the last reader of the
// process leaves, the shared file lock lingers, unless a writer announces
// a wait: then it is dropped at once.
func (l *File) readRelease() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			if l.st.Add(-2) == 1 {
				gate := l.gate.Load()
				if until, ok := gate.announced(); gate != nil && (!ok || until > time.Now().UnixNano()) {
					l.dropIdle()
				} else {
					l.idle.Reset(l.linger)
				}
			}
			l.sem.Release(1)
		})
	}
}

// dropIdle drops the shared file lock if no reader holds the lock. When
// rmu is taken it tries again RetryDelay later: the holder may be the idle
// timer's own drop, which found a reader in who has left since, and with a
// writer of another process announced no new reader comes to drop it.
func (l *File) dropIdle() {
	if !l.rmu.TryAcquire(1) {
		l.idle.Reset(RetryDelay)
		return
	}
	if l.st.CompareAndSwap(1, 0) {
		_ = l.file.Unlock()
	}
	l.rmu.Release(1)
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

// lockFile is an open lock file and its descriptor, kept for flock(2), and
// for the turnstile, its announcement word mapped shared.
type lockFile struct {
	f  *os.File
	fd int
	// mem is the file's first gateWordSize bytes, mapped shared; nil when
	// they could not be mapped. word points into it.
	mem  []byte
	word *atomic.Int64
	// faulted is set once an access to word faulted: the file was
	// truncated under the mapping by something other than favaproxy.
	// From then on the turnstile has no announcements.
	faulted atomic.Bool
	// writable reports whether word may be written (announced in).
	writable bool
}

// openLockFile opens the turnstile at path, created if missing, and maps
// its announcement word: read-write when the file can be opened so (and
// grown to hold the word), read-only otherwise. A file that cannot be
// mapped is still a turnstile, without announcements.
func openLockFile(path string) (*lockFile, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, fileMode)
	writable := err == nil
	if err != nil {
		f, err = os.OpenFile(path, os.O_CREATE|os.O_RDONLY|syscall.O_CLOEXEC, fileMode)
	}
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	lf := &lockFile{f: f, fd: int(f.Fd())}
	fi, err := f.Stat()
	if err != nil {
		return lf, nil
	}
	if fi.Size() < gateWordSize {
		// Zeros: no writer waits. The file only ever grows to the word's
		// size, so a mapping of another process never loses its page.
		if !writable || f.Truncate(gateWordSize) != nil {
			return lf, nil
		}
	}
	prot := syscall.PROT_READ
	if writable {
		prot |= syscall.PROT_WRITE
	}
	mem, err := syscall.Mmap(lf.fd, 0, gateWordSize, prot, syscall.MAP_SHARED)
	if err != nil {
		return lf, nil
	}
	lf.mem, lf.writable = mem, writable
	lf.word = (*atomic.Int64)(unsafe.Pointer(&mem[0])) // page-aligned
	return lf, nil
}

// close unmaps the announcement word and closes the file, which drops any
// flock it held. No other goroutine may be using lf.
func (lf *lockFile) close() {
	if lf.mem != nil {
		_ = syscall.Munmap(lf.mem)
		lf.mem, lf.word = nil, nil
	}
	lf.f.Close()
}

// announced returns the end of the announcement in force (Unix
// nanoseconds; 0 or past for none), and false when the turnstile has no
// announcements (lf nil, unmapped, or faulted): then readers must pass it.
func (lf *lockFile) announced() (until int64, ok bool) {
	if lf == nil || lf.word == nil || lf.faulted.Load() {
		return 0, false
	}
	ok = lf.access(func() { until = lf.word.Load() })
	return until, ok
}

// announce tells readers in every process that a writer waits, for the next
// announceFor. It does nothing on a turnstile that cannot be written.
func (lf *lockFile) announce() {
	if lf.word != nil && lf.writable && !lf.faulted.Load() {
		lf.access(func() { lf.word.Store(time.Now().Add(announceFor).UnixNano()) })
	}
}

// withdraw ends the announcement, so that readers may join again without
// passing the turnstile.
func (lf *lockFile) withdraw() {
	if lf.word != nil && lf.writable && !lf.faulted.Load() {
		lf.access(func() { lf.word.Store(0) })
	}
}

// access runs fn, which touches the mapped word, turning the fault of a
// mapping whose file was truncated (SIGBUS) into a false return and a
// turnstile without announcements, rather than a crash of the process.
func (lf *lockFile) access(fn func()) (ok bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if recover() != nil {
			lf.faulted.Store(true)
			ok = false
		}
	}()
	fn()
	return true
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
		lf.close()
	}
	return next, nil
}

// try takes the flock how (LOCK_SH or LOCK_EX) without blocking and reports
// whether it holds it.
func (lf *lockFile) try(how int) (bool, error) {
	for {
		err := flockFn(lf.fd, how|syscall.LOCK_NB)
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
	for flockFn(lf.fd, syscall.LOCK_UN) == syscall.EINTR {
	}
}

// poll takes the flock how on lf, polling every RetryDelay, until it holds
// it or ctx ends. tick, if set, runs before every attempt.
func poll(ctx context.Context, lf *lockFile, how int, tick func()) error {
	return retry(ctx, tick, func() (bool, error) { return lf.try(how) })
}

// pollFile takes the exclusive lock of f, polling every RetryDelay, until
// it holds it or ctx ends. tick runs before every attempt.
func pollFile(ctx context.Context, f *flock.Flock, tick func()) error {
	return retry(ctx, tick, f.TryLock)
}

// retry calls try, and tick before it if set, every RetryDelay until try
// succeeds or fails, or ctx ends.
func retry(ctx context.Context, tick func(), try func() (bool, error)) error {
	var t *time.Timer
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if tick != nil {
			tick()
		}
		ok, err := try()
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
