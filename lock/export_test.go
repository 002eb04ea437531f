package lock

import (
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// SetGateInterval changes how long l's readers may go without passing the
// turnstile when no writer announces a wait.
func SetGateInterval(l *File, d time.Duration) { l.gateInterval = d }

// SetLinger changes how long l's shared file lock outlives its last reader.
func SetLinger(l *File, d time.Duration) { l.linger = d }

// CountFlocks counts the flock(2) calls of every File on the turnstile
// until the test ends. Tests that use it must not run in parallel.
func CountFlocks(tb testing.TB) *atomic.Int64 {
	var n atomic.Int64
	tb.Cleanup(func() { flockFn = syscall.Flock })
	flockFn = func(fd, how int) error {
		n.Add(1)
		return syscall.Flock(fd, how)
	}
	return &n
}

// BeginIdleDrop takes what the idle timer's drop of the shared file lock
// holds while it runs, as if the timer fired now and found a reader in;
// the returned function ends it.
func BeginIdleDrop(l *File) func() {
	if !l.rmu.TryAcquire(1) {
		panic("lock: the drop's mutex is taken")
	}
	return func() { l.rmu.Release(1) }
}
