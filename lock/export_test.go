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
