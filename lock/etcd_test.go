package lock_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/internal/etcdtest"
	"github.com/favaproxy/favaproxy/lock"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// hosts returns n etcd locks of one ledger, each with its own client (as
// on n hosts), sharing the fence file in dir.
func hosts(t *testing.T, srv *etcdtest.Server, dir string, n int, ttl time.Duration, hooks lock.EtcdHooks) []*lock.Etcd {
	t.Helper()
	out := make([]*lock.Etcd, n)
	for i := range out {
		out[i] = lock.NewEtcd(srv.Client(t), "/favaproxy/test/main.beancount", ttl, filepath.Join(dir, "fence"), hooks)
		t.Cleanup(func() { out[i].Close() })
	}
	return out
}

// TestEtcdExcludesHosts: writers on three "hosts" increment a counter file
// by read-then-write; with the etcd lock no increment is lost, and every
// hold's fencing token is newer than the one before.
func TestEtcdExcludesHosts(t *testing.T) {
	srv := etcdtest.Start(t)
	dir := t.TempDir()
	locks := hosts(t, srv, dir, 3, 10*time.Second, lock.EtcdHooks{})
	counter := filepath.Join(dir, "counter")
	os.WriteFile(counter, []byte("0"), 0o644)
	const perWriter = 10
	var wg sync.WaitGroup
	var tokens sync.Map
	var last atomic.Int64
	var errs atomic.Int32
	for w := range 6 {
		l := locks[w%len(locks)]
		wg.Go(func() {
			for range perWriter {
				release, err := l.Lock(context.Background())
				if err != nil {
					t.Error(err)
					return
				}
				tok := l.Token()
				if prev := last.Swap(tok); tok <= prev {
					errs.Add(1)
				}
				tokens.Store(tok, true)
				b, _ := os.ReadFile(counter)
				n, _ := strconv.Atoi(string(b))
				time.Sleep(time.Millisecond) // widen the window
				os.WriteFile(counter, []byte(strconv.Itoa(n+1)), 0o644)
				release()
			}
		})
	}
	wg.Wait()
	b, _ := os.ReadFile(counter)
	if got, want := string(b), strconv.Itoa(6*perWriter); got != want {
		t.Errorf("counter=%s, want %s: increments were lost", got, want)
	}
	if errs.Load() > 0 {
		t.Errorf("%d holds had a token not newer than the hold before", errs.Load())
	}
	f, err := lock.ReadFence(filepath.Join(dir, "fence"))
	if err != nil || f != last.Load() {
		t.Errorf("fence file holds %d (%v), want the last token %d", f, err, last.Load())
	}
}

// TestEtcdLeaseLost: when the hold's lease ends (revoked here, as etcd
// does when it expires), Lost is closed, Verify fails, another host takes
// the lock, and the first host's hold stays refused even though its
// process never released it.
func TestEtcdLeaseLost(t *testing.T) {
	srv := etcdtest.Start(t)
	var losses atomic.Int32
	locks := hosts(t, srv, t.TempDir(), 2, 5*time.Second, lock.EtcdHooks{LeaseLost: func() { losses.Add(1) }})
	a, b := locks[0], locks[1]
	release, err := a.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := a.Verify(context.Background()); err != nil {
		t.Fatalf("Verify of a live hold: %v", err)
	}
	c := srv.Client(t)
	leases, err := c.Leases(context.Background())
	if err != nil || len(leases.Leases) != 1 {
		t.Fatalf("leases %v, %v; want the one of the hold", leases, err)
	}
	if _, err := c.Revoke(context.Background(), leases.Leases[0].ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("Lost not closed 10 s after the lease ended")
	}
	if err := a.Verify(context.Background()); !errors.Is(err, lock.ErrLeaseLost) {
		t.Errorf("Verify after the loss: %v, want ErrLeaseLost", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rb, err := b.Lock(ctx)
	if err != nil {
		t.Fatalf("the other host could not take the lock after the loss: %v", err)
	}
	rb()
	if losses.Load() != 1 {
		t.Errorf("%d lease losses counted, want 1", losses.Load())
	}
}

// TestEtcdFenced: a hold whose fence file names a newer hold refuses to
// write: at Lock, and at Verify once a newer holder wrote the file.
func TestEtcdFenced(t *testing.T) {
	srv := etcdtest.Start(t)
	dir := t.TempDir()
	var fenced atomic.Int32
	l := hosts(t, srv, dir, 1, 5*time.Second, lock.EtcdHooks{Fenced: func() { fenced.Add(1) }})[0]
	fence := filepath.Join(dir, "fence")
	release, err := l.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	tok := l.Token()
	os.WriteFile(fence, []byte(strconv.FormatInt(tok+1000, 10)), 0o644) // a newer holder wrote
	if err := l.Verify(context.Background()); !errors.Is(err, lock.ErrFenced) {
		t.Errorf("Verify with a newer fence: %v, want ErrFenced", err)
	}
	release()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := l.Lock(ctx); !errors.Is(err, lock.ErrFenced) {
		t.Errorf("Lock with a fence file from the future: %v, want ErrFenced", err)
	}
	if fenced.Load() != 2 {
		t.Errorf("%d fencing refusals counted, want 2", fenced.Load())
	}
}

// TestEtcdDown: with etcd stopped, a writer's wait ends at its deadline
// and readers are not held up; once etcd is back, writers proceed.
func TestEtcdDown(t *testing.T) {
	srv := etcdtest.Start(t)
	l := hosts(t, srv, t.TempDir(), 1, 3*time.Second, lock.EtcdHooks{})[0]
	release, err := l.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	release()
	srv.Stop()
	if err := l.Check(); err == nil {
		t.Error("Check passed with etcd stopped")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	start := time.Now()
	_, err = l.Lock(ctx)
	cancel()
	if err == nil {
		t.Fatal("Lock succeeded with etcd stopped")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Lock took %v to give up with a 1 s deadline", d)
	}
	// Once the session's lease has ended too, a new one cannot be
	// granted: the wait still ends at its deadline.
	time.Sleep(4 * time.Second)
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	start = time.Now()
	_, err = l.Lock(ctx)
	cancel()
	if err == nil {
		t.Fatal("Lock succeeded with etcd stopped")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Lock without a session took %v to give up with a 1 s deadline", d)
	}
	rr, err := l.RLock(context.Background())
	if err != nil {
		t.Fatalf("RLock with etcd stopped: %v", err)
	}
	rr()
	tr, ok := l.TryRLock()
	if !ok {
		t.Fatal("TryRLock with etcd stopped and no writer: not taken")
	}
	tr()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	release, err = l.Lock(ctx)
	if err != nil {
		t.Fatalf("Lock after etcd came back: %v", err)
	}
	release()
	if err := l.Check(); err != nil {
		t.Errorf("Check with etcd back: %v", err)
	}
}

// BenchmarkLockEtcdVsFlock is one uncontended acquire and release of the
// exclusive lock: the etcd mutex against the flock lock file, in one run.
func BenchmarkLockEtcdVsFlock(b *testing.B) {
	srv := etcdtest.Start(b)
	dir := b.TempDir()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.Endpoint()}, DialTimeout: 2 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	e := lock.NewEtcd(c, "/favaproxy/bench/main.beancount", 10*time.Second, filepath.Join(dir, "fence"), lock.EtcdHooks{})
	defer e.Close()
	for _, tc := range []struct {
		name string
		l    interface {
			Lock(context.Context) (func(), error)
		}
	}{{"flock", lock.New(filepath.Join(dir, "lock"))}, {"etcd", e}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				release, err := tc.l.Lock(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				release()
			}
		})
	}
}

// TestEtcdReleaseWhileDown: a release that etcd does not take (it is down
// for a moment) must not leave the lock's key behind under a lease the
// session keeps renewing once etcd is back: the release ends the session,
// whose lease is revoked when etcd returns, and another host gets the lock
// long before the lease would have run out (without this one writing
// again).
func TestEtcdReleaseWhileDown(t *testing.T) {
	srv := etcdtest.Start(t)
	// Much longer than etcd is down here, so that the session outlives it.
	const ttl = 10 * time.Second
	locks := hosts(t, srv, t.TempDir(), 2, ttl, lock.EtcdHooks{})
	a, b := locks[0], locks[1]
	release, err := a.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	release()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*ttl)
	defer cancel()
	start := time.Now()
	rb, err := b.Lock(ctx)
	if err != nil {
		t.Fatalf("the other host after %v: %v", time.Since(start).Round(time.Millisecond), err)
	}
	rb()
	if d := time.Since(start); d > ttl/2 {
		t.Errorf("the other host waited %v for a lock released before, want well under the TTL (%v)", d.Round(time.Millisecond), ttl)
	}
	// The first host locks again, on a new session.
	ctx, cancel = context.WithTimeout(context.Background(), 2*ttl)
	defer cancel()
	ra, err := a.Lock(ctx)
	if err != nil {
		t.Fatalf("the first host again: %v", err)
	}
	ra()
}

// TestEtcdFenceMovedBack: an older holder paused between reading and
// replacing the fence file can set it back to its own token once a newer
// holder has written it. The confirmed holder's next Verify moves it
// forward again, so that the file fences every hold older than the newest.
func TestEtcdFenceMovedBack(t *testing.T) {
	srv := etcdtest.Start(t)
	dir := t.TempDir()
	l := hosts(t, srv, dir, 1, 5*time.Second, lock.EtcdHooks{})[0]
	fence := filepath.Join(dir, "fence")
	release, err := l.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	tok := l.Token()
	if err := os.WriteFile(fence, []byte(strconv.FormatInt(tok-1, 10)), 0o644); err != nil { // the older holder's late write
		t.Fatal(err)
	}
	if err := l.Verify(context.Background()); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got, err := lock.ReadFence(fence); err != nil || got != tok {
		t.Errorf("fence file holds %d (%v) after Verify, want the holder's token %d", got, err, tok)
	}
}
