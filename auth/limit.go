package auth

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync"
	"time"
)

// ErrTooManyAttempts is wrapped by the error of a peer that failed to
// authenticate too often: it is refused without a password check until
// its window ends (favaproxy answers 429 with Retry-After).
var ErrTooManyAttempts = errors.New("too many failed attempts")

// RetryAfter is how long a refused peer should wait, carried by errors that
// wrap ErrTooManyAttempts.
type RetryAfter interface{ RetryAfter() time.Duration }

// Limits on password checks. bcrypt costs tens of milliseconds of a core
// by design: unbounded, 64 wrong passwords sent at once made the next
// login wait 6.4 s on two cores.
const (
	// failWindow and failMax: a peer (TCP address) with failMax failed
	// attempts within failWindow is refused without a check until the
	// window ends.
	failWindow = time.Minute
	failMax    = 10
	// failPeersMax bounds the peers remembered; past it the oldest
	// windows are forgotten.
	failPeersMax = 10000
)

// checkSlots bounds the password checks that run at once: one per core,
// so checks wait their turn instead of starving every other request.
var checkSlots = make(chan struct{}, max(1, runtime.NumCPU()))

// withCheckSlot runs check once a slot is free, or returns ctx's error.
func withCheckSlot(ctx context.Context, check func() error) error {
	select {
	case checkSlots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-checkSlots }()
	return check()
}

// failLimiter counts failed attempts per peer in fixed windows.
type failLimiter struct {
	now func() time.Time
	// mu guards peers.
	mu    sync.Mutex
	peers map[string]*failWindowState
}

type failWindowState struct {
	start time.Time
	n     int
}

type tooManyError struct{ wait time.Duration }

func (e *tooManyError) Error() string             { return "too many failed attempts from this address" }
func (e *tooManyError) Unwrap() error             { return ErrTooManyAttempts }
func (e *tooManyError) RetryAfter() time.Duration { return e.wait }
func newFailLimiter(now func() time.Time) *failLimiter {
	return &failLimiter{now: now, peers: map[string]*failWindowState{}}
}

// peerOf returns the host of a request's remote address.
func peerOf(remoteAddr string) string {
	if h, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return h
	}
	return remoteAddr
}

// allow returns an error wrapping ErrTooManyAttempts when peer has used up
// its failures in the current window.
func (f *failLimiter) allow(peer string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.peers[peer]
	now := f.now()
	if w == nil || now.Sub(w.start) >= failWindow {
		return nil
	}
	if w.n >= failMax {
		return &tooManyError{wait: failWindow - now.Sub(w.start)}
	}
	return nil
}

// failed counts a failed attempt of peer.
func (f *failLimiter) failed(peer string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	w := f.peers[peer]
	if w == nil || now.Sub(w.start) >= failWindow {
		if w == nil && len(f.peers) >= failPeersMax {
			for p, old := range f.peers {
				if now.Sub(old.start) >= failWindow {
					delete(f.peers, p)
				}
			}
			if len(f.peers) >= failPeersMax {
				clear(f.peers)
			}
		}
		w = &failWindowState{start: now}
		f.peers[peer] = w
	}
	w.n++
}
