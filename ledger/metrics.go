package ledger

import "time"

// Metrics receives a ledger's measurements; favaproxy's Prometheus
// metrics implement it. Label values are the constants below.
type Metrics interface {
	// LockWait observes a wait for the ledger lock in mode.
	LockWait(ledger, mode string, d time.Duration)
	// LockHold observes how long the ledger lock was held in mode.
	LockHold(ledger, mode string, d time.Duration)
	// QueueDepth moves the count of writes waiting for the ledger by delta.
	QueueDepth(ledger string, delta int)
	// Conflict counts a conflict of kind, ended by resolution.
	Conflict(ledger, kind, resolution string)
	// IdempotentReplay counts a write answered from an earlier one.
	IdempotentReplay(ledger string)
	// IdempotencyMismatch counts a key reused for another request (422).
	IdempotencyMismatch(ledger string)
	// Batch observes the client requests in one add_entries call to Fava.
	Batch(ledger string, requests int)
	// Rollback counts an event of the rollback journal (Rollback*).
	Rollback(ledger, event string)
	// Fsync observes the time spent making pre-images or a write durable.
	Fsync(ledger string, d time.Duration)
}

// Lock modes.
const (
	ModeExclusive = "exclusive"
	ModeShared    = "shared"
)

// Kinds of conflicts.
const (
	ConflictFile      = "file"       // PUT source with a stale checksum, or an outside writer
	ConflictSlice     = "slice"      // a slice edit whose slice changed
	ConflictEntryHash = "entry_hash" // a slice edit whose entry hash is unknown
)

// How conflicts end.
const (
	ResolutionRelocated = "relocated"    // the moved entry was found and edited
	ResolutionMerged    = "merged"       // a three-way merge was written
	ResolutionRetried   = "retried"      // the edit was re-derived and sent again
	Resolution409       = "answered_409" // the client was told
)

// nopMetrics measures nothing.
type nopMetrics struct{}

func (nopMetrics) LockWait(string, string, time.Duration) {}
func (nopMetrics) LockHold(string, string, time.Duration) {}
func (nopMetrics) QueueDepth(string, int)                 {}
func (nopMetrics) Conflict(string, string, string)        {}
func (nopMetrics) IdempotentReplay(string)                {}
func (nopMetrics) IdempotencyMismatch(string)             {}
func (nopMetrics) Batch(string, int)                      {}
func (nopMetrics) Rollback(string, string)                {}
func (nopMetrics) Fsync(string, time.Duration)            {}
