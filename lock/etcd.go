package lock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/favaproxy/favaproxy/durable"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"golang.org/x/sync/semaphore"
)

// Etcd is the lock of one ledger shared by hosts: an in-process
// writer-preferring RW lock (as File's) in front of an etcd mutex
// (go.etcd.io/etcd/client/v3/concurrency: a key under the ledger's prefix,
// attached to a lease that a session keeps alive; waiters queue by the
// revision of their key) taken by writers.
//
// Readers take only the in-process lock: etcd has no shared mode, and a
// read through this process needs only to not overlap this process's own
// writes. A Fava on another host may read a file while this host's write
// rewrites it; it reads it again once it changes (Fava reloads on a
// changed modification time).
//
// A hold can be lost: when the lease expires (the process was stopped,
// partitioned from etcd, or etcd was down for longer than the TTL),
// another host may take the mutex. Lost reports it as soon as the session
// notices; Verify asks etcd whether the key is still this hold's and
// compares the fence file, and is called before every request to Fava and
// every file favaproxy replaces.
//
// Every hold has a fencing token: the etcd revision at which it was
// acquired, which grows with every hold of the mutex by any host. It is
// written to the fence file beside the ledger under the lock; a hold whose
// token is older than the file's refuses to write. A shared file system
// cannot enforce tokens on the writes themselves: a process that is paused
// between its last check and its write can still write after its lease
// ended. The window is the time between Verify and the write, not the TTL.
type Etcd struct {
	client *clientv3.Client
	key    string
	ttl    int
	fence  string
	hooks  EtcdHooks
	sem    *semaphore.Weighted

	// mu guards session and hold.
	mu      sync.Mutex
	session *concurrency.Session
	hold    *etcdHold
}

// EtcdHooks are called on lock events, for metrics. Nil hooks are
// skipped.
type EtcdHooks struct {
	// LeaseLost is called once per hold that was lost while held.
	LeaseLost func()
	// Fenced is called when a hold refuses to write because the fence
	// file names a newer hold.
	Fenced func()
}

// etcdHold is one exclusive hold of the mutex.
type etcdHold struct {
	mutex   *concurrency.Mutex
	session *concurrency.Session
	token   int64
	lost    chan struct{}
	once    sync.Once
}

// ErrLeaseLost is returned by Verify, and by Lock when the lease ends
// while it waits, once the lock's lease expired: another host may hold
// the lock.
var ErrLeaseLost = errors.New("etcd lease lost")

// ErrFenced is returned when the fence file names a newer hold than this
// one: another host took the lock after this one lost it.
var ErrFenced = errors.New("fenced: a newer holder of the ledger lock has written")

// NewEtcd returns the lock of a ledger on etcd: the mutex under key (one
// key per ledger, the same on every host), on sessions whose lease lasts
// ttl, with the fence file fence beside the ledger. The client is shared
// and not closed by the lock.
func NewEtcd(client *clientv3.Client, key string, ttl time.Duration, fence string, hooks EtcdHooks) *Etcd {
	secs := max(int((ttl+time.Second-1)/time.Second), 1)
	return &Etcd{
		client: client,
		key:    strings.TrimSuffix(key, "/"),
		ttl:    secs,
		fence:  fence,
		hooks:  hooks,
		sem:    semaphore.NewWeighted(writerWeight),
	}
}

// Key returns the lock's etcd key prefix.
func (l *Etcd) Key() string { return l.key }

// Lock takes the lock exclusively: in-process first, then the etcd mutex
// (on the current session, or a new one when it ended), then it checks and
// advances the fence file. When ctx ends first it holds nothing.
func (l *Etcd) Lock(ctx context.Context) (func(), error) {
	if err := l.sem.Acquire(ctx, writerWeight); err != nil {
		return nil, l.waitErr(err)
	}
	h, err := l.acquire(ctx)
	if err != nil {
		l.sem.Release(writerWeight)
		return nil, l.waitErr(err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.hold = nil
			l.mu.Unlock()
			l.unlock(h.session, h.mutex)
			h.once.Do(func() { close(h.lost) }) // ends its watcher
			l.sem.Release(writerWeight)
		})
	}, nil
}

// acquire takes the etcd mutex and the fence. The caller holds all of sem.
func (l *Etcd) acquire(ctx context.Context) (*etcdHold, error) {
	s, err := l.currentSession(ctx)
	if err != nil {
		return nil, err
	}
	m := concurrency.NewMutex(s, l.key)
	if err := m.Lock(ctx); err != nil {
		// The wait may have put the key before it failed (a deadline
		// during the acquiring Txn), and the session would keep that
		// key alive: end the session, which revokes its lease.
		l.endSession(s)
		if errors.Is(err, concurrency.ErrSessionExpired) {
			err = fmt.Errorf("%w: %w", ErrLeaseLost, err)
		}
		return nil, err
	}
	h := &etcdHold{mutex: m, session: s, token: m.Header().Revision, lost: make(chan struct{})}
	if err := l.advanceFence(h.token); err != nil {
		l.unlock(s, m)
		return nil, err
	}
	select {
	case <-s.Done():
		l.unlock(s, m)
		return nil, ErrLeaseLost
	default:
	}
	l.mu.Lock()
	l.hold = h
	l.mu.Unlock()
	go l.watch(s, h)
	return h, nil
}

// unlock releases m, held on s. When etcd does not take the release, s
// is ended: its key would otherwise stay as long as the session renews its
// lease, and hold off every other host until this one writes again.
func (l *Etcd) unlock(s *concurrency.Session, m *concurrency.Mutex) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.Unlock(ctx); err != nil {
		l.endSession(s)
	}
}

// endSession stops renewing s's lease and revokes it, which deletes every
// key put under it: the lock is free for others at once, or when the
// lease's TTL runs out if etcd cannot be reached. The next Lock starts a
// new session. The revocation runs in the background, bounded by the TTL.
func (l *Etcd) endSession(s *concurrency.Session) {
	l.mu.Lock()
	if l.session == s {
		l.session = nil
	}
	l.mu.Unlock()
	go s.Close()
}

// watch marks h lost when its session ends while h is held.
func (l *Etcd) watch(s *concurrency.Session, h *etcdHold) {
	select {
	case <-s.Done():
		l.markLost(h)
	case <-h.lost:
	}
}

// markLost closes h's lost channel, once, and counts a lease loss unless
// h was released.
func (l *Etcd) markLost(h *etcdHold) {
	h.once.Do(func() {
		close(h.lost)
		if l.hooks.LeaseLost != nil {
			l.hooks.LeaseLost()
		}
	})
}

// currentSession returns the live session, creating one (a new lease)
// when there is none or the last one ended.
func (l *Etcd) currentSession(ctx context.Context) (*concurrency.Session, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.session != nil {
		select {
		case <-l.session.Done():
			l.session = nil
		default:
			return l.session, nil
		}
	}
	// The lease is granted within ctx (etcd may be down); the session
	// outlives ctx: its keepalive runs until the lease ends or Close.
	lease, err := l.client.Grant(ctx, int64(l.ttl))
	if err != nil {
		return nil, fmt.Errorf("etcd lease: %w", err)
	}
	s, err := concurrency.NewSession(l.client, concurrency.WithLease(lease.ID), concurrency.WithTTL(l.ttl),
		concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, fmt.Errorf("etcd session: %w", err)
	}
	l.session = s
	return s, nil
}

// RLock takes the lock shared, in this process only (see Etcd).
func (l *Etcd) RLock(ctx context.Context) (func(), error) {
	if err := l.sem.Acquire(ctx, 1); err != nil {
		return nil, fmt.Errorf("acquire shared lock %s: %w", l.key, err)
	}
	var once sync.Once
	return func() { once.Do(func() { l.sem.Release(1) }) }, nil
}

// TryRLock takes the lock shared, in this process only, if no writer of
// this process holds or waits for it.
func (l *Etcd) TryRLock() (func(), bool) {
	if !l.sem.TryAcquire(1) {
		return nil, false
	}
	var once sync.Once
	return func() { once.Do(func() { l.sem.Release(1) }) }, true
}

// Lost returns a channel closed once the exclusive hold this process has
// is lost (its lease ended). Called without a hold it returns a closed
// channel.
func (l *Etcd) Lost() <-chan struct{} {
	l.mu.Lock()
	h := l.hold
	l.mu.Unlock()
	if h == nil {
		return closed
	}
	return h.lost
}

// closed is a closed channel: the Lost of no hold.
var closed = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Token returns the fencing token of the exclusive hold this process has,
// 0 without one.
func (l *Etcd) Token() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hold == nil {
		return 0
	}
	return l.hold.token
}

// Verify reports whether this process still holds the lock exclusively:
// the hold was not lost, the fence file names no newer hold, and etcd
// still has this hold's key at its revision. A failed check marks the hold
// lost.
func (l *Etcd) Verify(ctx context.Context) error {
	l.mu.Lock()
	h := l.hold
	l.mu.Unlock()
	if h == nil {
		return ErrLeaseLost
	}
	select {
	case <-h.lost:
		return ErrLeaseLost
	default:
	}
	fenced, err := l.checkFence(h.token)
	if err != nil {
		if errors.Is(err, ErrFenced) {
			l.markLost(h)
		}
		return err
	}
	vctx, cancel := context.WithTimeout(ctx, time.Duration(l.ttl)*time.Second)
	defer cancel()
	resp, err := l.client.Txn(vctx).If(h.mutex.IsOwner()).Commit()
	if err != nil {
		// etcd cannot confirm the hold: it may be lost by now.
		return fmt.Errorf("%w: etcd did not confirm the hold: %w", ErrLeaseLost, err)
	}
	if !resp.Succeeded {
		l.markLost(h)
		return fmt.Errorf("%w: the lock key is gone", ErrLeaseLost)
	}
	if fenced < h.token {
		// An older holder, paused between reading and replacing the fence
		// file, set it back: the confirmed holder moves it forward again,
		// so that it fences every hold older than this one.
		return l.advanceFence(h.token)
	}
	return nil
}

// Check reports whether etcd answers, for readiness probes.
func (l *Etcd) Check() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := l.client.Get(ctx, l.key, clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("etcd: %w", err)
	}
	return nil
}

// Close ends the lock's session (and so its lease), releasing a hold
// left behind.
func (l *Etcd) Close() error {
	l.mu.Lock()
	s := l.session
	l.session = nil
	l.mu.Unlock()
	if s == nil {
		return nil
	}
	return s.Close()
}

func (l *Etcd) waitErr(err error) error {
	return fmt.Errorf("acquire exclusive lock %s on etcd: %w", l.key, err)
}

// checkFence returns the token in the fence file, failing with ErrFenced
// (and counting the refusal) when it names a hold newer than token.
func (l *Etcd) checkFence(token int64) (int64, error) {
	f, err := ReadFence(l.fence)
	if err != nil {
		return 0, err
	}
	if f > token {
		if l.hooks.Fenced != nil {
			l.hooks.Fenced()
		}
		return 0, fmt.Errorf("%w (hold %d, fence file %d)", ErrFenced, token, f)
	}
	return f, nil
}

// advanceFence fails with ErrFenced when the fence file names a hold newer
// than token, and otherwise writes token to it, atomically and durably.
func (l *Etcd) advanceFence(token int64) error {
	f, err := l.checkFence(token)
	if err != nil || f == token {
		return err
	}
	if err := durable.ReplaceFile(l.fence, []byte(strconv.FormatInt(token, 10)+"\n"), (*os.File).Sync); err != nil {
		return fmt.Errorf("write fence file: %w", err)
	}
	return nil
}

// ReadFence returns the token in the fence file at path, 0 when there is
// none.
func ReadFence(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read fence file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("fence file %s: %q is not a token", path, s)
	}
	return n, nil
}
