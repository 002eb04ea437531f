package ledger

import (
	"context"
	"fmt"
	"testing"

	"github.com/favaproxy/favaproxy"
)

// TestUserLocksDoNotGrow pins that the per-user lock map keeps only users
// with a write in flight.
func TestUserLocksDoNotGrow(t *testing.T) {
	var ul userLocks
	for i := range 1000 {
		release, err := ul.lock(context.Background(), userName(i))
		if err != nil {
			t.Fatal(err)
		}
		release()
	}
	ctx, cancel := context.WithCancel(context.Background())
	release, _ := ul.lock(ctx, "a")
	cancel()
	if _, err := ul.lock(ctx, "a"); err == nil {
		t.Fatal("a second lock of a held user lock succeeded")
	}
	release()
	if got := ul.len(); got != 0 {
		t.Errorf("%d user locks left, want 0", got)
	}
}

func userName(i int) favaproxy.User { return favaproxy.User(fmt.Sprint("u", i)) }
