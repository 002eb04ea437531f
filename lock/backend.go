package lock

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path"
	"sync"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/favaproxy/favaproxy/config"
)

// Locker is a ledger's readers–writer lock, as package ledger uses it.
type Locker interface {
	Lock(ctx context.Context) (release func(), err error)
	RLock(ctx context.Context) (release func(), err error)
}

// Backend makes the locks of a configuration's ledgers on its lock.backend:
// File locks for flock, Etcd locks sharing one etcd client for etcd, nil
// for none (package ledger then uses an in-process lock).
type Backend struct {
	cfg    config.Config
	client *clientv3.Client // etcd only

	mu    sync.Mutex
	locks []*Etcd
}

// ErrNoCrossProcess is returned where a lock must exclude other processes
// and lock.backend is none.
var ErrNoCrossProcess = errors.New("lock.backend none excludes no other process")

// OpenBackend opens the lock backend of cfg; for etcd it creates the client
// (which connects lazily: an etcd that is down makes writes wait, not
// favaproxy fail to start). Close it when done.
func OpenBackend(cfg config.Config) (*Backend, error) {
	b := &Backend{cfg: cfg}
	if cfg.Lock.Backend != config.BackendEtcd {
		return b, nil
	}
	e := cfg.Lock.Etcd
	var tlsCfg *tls.Config
	if e.CAFile != "" || e.CertFile != "" {
		info := transport.TLSInfo{CertFile: e.CertFile, KeyFile: e.KeyFile, TrustedCAFile: e.CAFile}
		c, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
		tlsCfg = c
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   e.Endpoints,
		DialTimeout: e.DialTimeout,
		Username:    e.Username,
		Password:    e.Password,
		TLS:         tlsCfg,
		Logger:      zap.NewNop(), // favaproxy logs what matters itself
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	b.client = client
	return b, nil
}

// Name returns the backend's name (lock.backend).
func (b *Backend) Name() string { return b.cfg.Lock.Backend }

// Locker returns the lock of ledger l; nil for the none backend. hooks
// count the etcd lock's events.
func (b *Backend) Locker(l config.Ledger, hooks EtcdHooks) Locker {
	switch b.cfg.Lock.Backend {
	case config.BackendEtcd:
		e := NewEtcd(b.client, path.Join(b.cfg.Lock.Etcd.Prefix, l.LockName()), b.cfg.Lock.Etcd.TTL, l.FencePath(), hooks)
		b.mu.Lock()
		b.locks = append(b.locks, e)
		b.mu.Unlock()
		return e
	case config.BackendNone:
		return nil
	default:
		return New(l.LockPath())
	}
}

// CrossProcess returns the lock of ledger l for a command that must
// exclude other processes (favaproxy lock, recover): ErrNoCrossProcess for
// the none backend.
func (b *Backend) CrossProcess(l config.Ledger) (Locker, error) {
	lk := b.Locker(l, EtcdHooks{})
	if lk == nil {
		return nil, ErrNoCrossProcess
	}
	return lk, nil
}

// Close ends the etcd sessions (their leases) and the client.
func (b *Backend) Close() error {
	b.mu.Lock()
	locks := b.locks
	b.locks = nil
	b.mu.Unlock()
	var errs []error
	for _, l := range locks {
		errs = append(errs, l.Close())
	}
	if b.client != nil {
		errs = append(errs, b.client.Close())
	}
	return errors.Join(errs...)
}
