package lock

import (
	"context"
	"path/filepath"
	"testing"
)

// BenchmarkLockUnlock compares one uncontended acquire/release of the
// in-process lock alone with the whole File lock (in-process plus flock),
// which is what a write or read through the proxy pays.
func BenchmarkLockUnlock(b *testing.B) {
	ctx := context.Background()
	newFile := func(b *testing.B) *File {
		return New(filepath.Join(b.TempDir(), ".main.beancount.favaproxy.lock"))
	}
	b.Run("InProcessOnly", func(b *testing.B) {
		l := newFile(b)
		for b.Loop() {
			if err := l.sem.Acquire(ctx, writerWeight); err != nil {
				b.Fatal(err)
			}
			l.sem.Release(writerWeight)
		}
	})
	b.Run("Exclusive", func(b *testing.B) {
		l := newFile(b)
		for b.Loop() {
			release, err := l.Lock(ctx)
			if err != nil {
				b.Fatal(err)
			}
			release()
		}
	})
	b.Run("Shared", func(b *testing.B) {
		l := newFile(b)
		for b.Loop() {
			release, err := l.RLock(ctx)
			if err != nil {
				b.Fatal(err)
			}
			release()
		}
	})
	b.Run("SharedOverlapping", func(b *testing.B) {
		// Readers overlapping another reader join the process's shared
		// flock without a system call while no writer announces a wait;
		// one of them passes the turnstile every GateInterval.
		l := newFile(b)
		hold, err := l.RLock(ctx)
		if err != nil {
			b.Fatal(err)
		}
		defer hold()
		for b.Loop() {
			release, err := l.RLock(ctx)
			if err != nil {
				b.Fatal(err)
			}
			release()
		}
	})
}
