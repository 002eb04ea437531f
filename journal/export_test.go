package journal

import (
	"os"
	"sync/atomic"
)

// CountSyncs makes every fsync of journal files count into n until the
// returned function restores the real one.
func CountSyncs(n *atomic.Int64) (restore func()) {
	old := syncFile
	syncFile = func(f *os.File) error {
		n.Add(1)
		return old(f)
	}
	return func() { syncFile = old }
}
