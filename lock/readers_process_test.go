package lock_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/lock"
)

// rewriteSize is the size of the file the rewrite child writes.
const rewriteSize = 64 << 10

// rewrite rewrites path in place as Fava does (truncate, then write), in two
// halves with a pause between, all letter c, under the exclusive lock.
func rewrite(ctx context.Context, path string, l *lock.File, c byte) error {
	release, err := l.Lock(ctx)
	if err != nil {
		return err
	}
	defer release()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	half := bytes.Repeat([]byte{c}, rewriteSize/2)
	if _, err := f.Write(half); err != nil {
		return err
	}
	time.Sleep(time.Millisecond)
	_, err = f.Write(half)
	return err
}

// TestReadersNeverSeeHalfWrittenFile runs a writer in another process that
// rewrites a file in place, in halves, while readers here overlap without
// pause, so that most of them join the process's shared lock without
// passing the turnstile. No reader may see the file truncated or mixed, and
// the writer must get through (writer preference across processes).
func TestReadersNeverSeeHalfWrittenFile(t *testing.T) {
	flocks := lock.CountFlocks(t)
	path := lockPath(t)
	data := filepath.Join(filepath.Dir(path), "main.beancount")
	if err := os.WriteFile(data, bytes.Repeat([]byte{'z'}, rewriteSize), 0o644); err != nil {
		t.Fatal(err)
	}
	const writes = 40
	c := startChild(t, "rewrite", path, envCounter+"="+data, envN+"="+strconv.Itoa(writes))
	c.expect(t, "ready")

	l := lock.New(path)
	var (
		reads   atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		errOnce sync.Once
		bad     error
	)
	for i := range 4 {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * time.Millisecond) // staggered: some reader always holds
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := readWhole(l, data); err != nil {
					errOnce.Do(func() { bad = err })
					return
				}
				reads.Add(1)
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	fmt.Fprintln(c.stdin, "go")
	select {
	case line := <-c.lines:
		if line != "done" {
			t.Errorf("child said %q, want done", line)
		}
	case <-time.After(30 * time.Second):
		t.Error("the writer did not finish 40 rewrites within 30s while readers overlapped")
	}
	close(stop)
	wg.Wait()
	if bad != nil {
		t.Fatal(bad)
	}
	n, passes := reads.Load(), flocks.Load()/2
	t.Logf("%d rewrites in %s; %d reads, %d turnstile passes", writes, time.Since(start).Round(time.Millisecond), n, passes)
	if passes >= n {
		t.Fatalf("%d turnstile passes for %d reads: no reader joined without one, the test proves nothing", passes, n)
	}
}

// readWhole reads path under the shared lock and checks that it is whole:
// rewriteSize bytes of one letter.
func readWhole(l *lock.File, path string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	release, err := l.RLock(ctx)
	if err != nil {
		return err
	}
	defer release()
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if len(b) != rewriteSize || bytes.Count(b, b[:1]) != len(b) {
		return errors.New("a reader saw the file half written")
	}
	return nil
}

// TestAnnouncedWriterInOtherProcessStopsNextReader: once a writer in
// another process announces its wait, the very next reader here waits,
// even though it could join readers already in and the turnstile was
// passed moments ago.
func TestAnnouncedWriterInOtherProcessStopsNextReader(t *testing.T) {
	path := lockPath(t)
	l := lock.New(path)
	lock.SetGateInterval(l, time.Hour) // only the announcement can stop a joining reader
	held := mustLock(t, l.RLock)
	mustLock(t, l.RLock)() // joins
	c := startChild(t, "exclusive", path)
	deadline := time.Now().Add(20 * time.Second)
	for !announced(t, path+lock.GateSuffix).After(time.Now()) {
		if time.Now().After(deadline) {
			t.Fatal("the writer in the other process did not announce its wait")
		}
		time.Sleep(time.Millisecond)
	}
	blocked(t, "RLock", l.RLock)
	held()
	c.expect(t, "locked")
	c.stop(t)
	mustLock(t, l.RLock)()
}
