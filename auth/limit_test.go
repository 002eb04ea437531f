package auth

import (
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestFailedAttemptsLimited: a peer that fails failMax times within a
// window is refused at once, without a password check, even with the
// right password, until the window ends; another peer is not affected.
func TestFailedAttemptsLimited(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeFile(t, path, 0, hashLine(t, "alice", "right"))
	b := mustBasic(t, path)
	now := time.Now()
	b.fails.now = func() time.Time { return now }
	bad := basicRequest("alice", "wrong")
	bad.RemoteAddr = "192.0.2.1:4000"
	for range failMax {
		wantUnauthorized(t, b, bad)
	}
	good := basicRequest("alice", "right")
	good.RemoteAddr = "192.0.2.1:4001"
	_, err := b.Authenticate(good)
	var wait RetryAfter
	if !errors.Is(err, ErrTooManyAttempts) || !errors.As(err, &wait) || wait.RetryAfter() <= 0 {
		t.Fatalf("after %d failures: %v, want too many attempts with a wait", failMax, err)
	}
	other := basicRequest("alice", "right")
	other.RemoteAddr = "192.0.2.2:4000"
	wantUser(t, b, other, "alice")
	now = now.Add(failWindow)
	wantUser(t, b, good, "alice")
}

// TestPasswordChecksBounded: no more password checks run at once than
// there are check slots, however many requests come in together.
func TestPasswordChecksBounded(t *testing.T) {
	var running, most atomic.Int32
	check := func() error {
		n := running.Add(1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		_ = bcrypt.CompareHashAndPassword([]byte("$2a$04$abcdefghijklmnopqrstuu7oF1o0.3G3ZUAVeNY1UWaq6x3lq4Zq."), []byte("x"))
		time.Sleep(5 * time.Millisecond)
		running.Add(-1)
		return nil
	}
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() { _ = withCheckSlot(t.Context(), check) })
	}
	wg.Wait()
	if got, limit := most.Load(), int32(cap(checkSlots)); got > limit || got == 0 {
		t.Fatalf("%d checks ran at once, want at most %d", got, limit)
	}
}
