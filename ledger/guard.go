package ledger

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/journal"
)

// settled is how a write sent to Fava ended, as far as the ledger's files
// tell (see rollback.go).
type settled int

const (
	// unsettled: not known. Durability is off, or the rollback could not
	// be settled (it stays hot and is settled before the next write).
	unsettled settled = iota
	// written: the write is in the files, verified and fsynced.
	written
	// nothing: the files are as they were before the write.
	nothing
	// unverified: Fava answered success, but the files do not show the
	// write (its keys are missing); they are left as they are.
	unverified
)

// Rollback events, for Metrics.Rollback.
const (
	RollbackBegun     = "begun"     // pre-images taken
	RollbackCommitted = "committed" // the write was kept
	RollbackRestored  = "restored"  // files were put back after a failed write
	RollbackRecovered = "recovered" // a rollback left hot by a crash was settled
)

// guard is the rollback of one write sent to Fava.
type guard struct {
	l *Ledger
	m *manifest // nil when durability is off
}

// rollbackDir is the ledger's rollback directory.
func rollbackDir(state, ledgerFile string) string {
	return filepath.Join(state, filepath.Base(ledgerFile)+".rollback")
}

// begin takes the pre-images of files before the write m describes (its
// kind, and for add_entries its keys and entries), carrying the requests
// reqs, is sent to Fava. expect holds the checksum a file must reach for
// the write to be complete, where it is known. It fails when the
// pre-images cannot be written (a full disk): then nothing is sent.
func (l *Ledger) begin(m *manifest, reqs []*Request, files []string, expect map[string]string) (*guard, error) {
	if err := l.verifyHold(context.Background()); err != nil {
		return nil, err
	}
	if l.all.Durability.Disabled {
		return &guard{l: l}, nil
	}
	for _, r := range reqs {
		m.RequestIDs = append(m.RequestIDs, r.RequestID)
	}
	t0 := time.Now()
	err := l.rb.begin(m, files, expect)
	l.metrics.Fsync(l.slug, time.Since(t0))
	if err != nil {
		_ = l.rb.commit() // drop what was copied; the files are untouched
		return nil, fmt.Errorf("%w: %w", favaproxy.Errorf(favaproxy.EInsufficientStorage,
			"favaproxy could not save the files before the write (is the state directory full?); nothing was written"), err)
	}
	l.metrics.Rollback(l.slug, RollbackBegun)
	return &guard{l: l, m: m}, nil
}

// settle decides the write after Fava's answer (resp, or the error of the
// call): see rollback.go. A write that is written stays hot until commit,
// so that its journal records can be appended first; every other outcome
// is committed here. The error, when set, is the answer to give instead of
// Fava's.
func (g *guard) settle(ctx context.Context, resp *fava.Response, callErr error) (settled, error) {
	l := g.l
	success := callErr == nil && resp.Reply.Outcome == fava.Success
	refused := callErr == nil && resp.Reply.Outcome != fava.UpstreamError && !success
	if g.m == nil {
		if success {
			return written, nil
		}
		return unsettled, nil
	}
	if errors.Is(callErr, errLost) {
		// Refused before it was sent: nothing was written. The rollback
		// stays for the next holder to find the files unchanged.
		l.unsettled.Store(true)
		return unsettled, callErr
	}
	if err := l.verifyHold(ctx); err != nil {
		// The lock was lost while Fava had the write (this process was
		// paused, or cut off from the lock's server): another holder may
		// be writing now, so nothing here touches the files or the
		// rollback. The next holder settles it (recoverHot), keeping it if
		// it is complete.
		l.unsettled.Store(true)
		return unsettled, errLostDuringWrite(err)
	}
	switch {
	case success:
		if l.rb.verified(g.m, l.index) {
			return g.durable()
		}
		// Nothing is put back over a write Fava reports done: the files
		// may hold another writer's change too.
		l.log.Error("fava answered success but the files do not show the write", "ledger", l.slug,
			"kind", g.m.Kind, "request_ids", g.m.RequestIDs)
		g.commitNow()
		return unverified, favaproxy.Errorf(favaproxy.EUpstream, "fava reported success but the ledger does not show the write")
	case refused:
		// Fava checks before it writes, so a refusal wrote nothing, except
		// an add_entries that failed after some of its entries were
		// inserted. Only a change made of insertions is put back: any
		// other is a writer that bypassed the lock, and stays.
		diff, err := changed(g.m)
		if err == nil && len(diff) == 0 {
			g.commitNow()
			return nothing, nil
		}
		if g.m.Insert && err == nil && l.rb.keptAll(g.m) {
			return g.rollBack("fava refused the write after inserting part of it")
		}
		g.commitNow()
		return unsettled, nil
	}
	if callErr != nil && (fava.IsDialError(callErr) || !isCallError(callErr)) {
		// Nothing reached Fava (it could not be reached, or the lock was
		// lost before sending): nothing was written.
		g.commitNow()
		return nothing, nil
	}
	if favaproxy.ErrorCode(callErr) == favaproxy.ETimeout {
		// Fava may still be running the request, and write long after:
		// nothing is put back under it. The rollback stays hot until the
		// request can no longer be running (timeouts.upstream from now);
		// the writer that finds it then settles it (recoverHot).
		g.m.Deadline = time.Now().UTC().Add(l.all.Timeouts.Upstream)
		if err := l.rb.rewrite(g.m); err != nil {
			l.log.Error("extend rollback", "ledger", l.slug, "err", err.Error())
		}
		l.unsettled.Store(true)
		return unsettled, nil
	}
	// No answer, because the connection ended (Fava died or reset it) or
	// the answer was not Fava's: once the files rest, a complete write is
	// kept, anything else rolled back.
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.all.Timeouts.Upstream)
	waitQuiet(qctx, g.m, l.all.Durability.Quiet)
	cancel()
	if l.rb.complete(g.m, l.index) {
		return g.durable()
	}
	return g.rollBack("fava did not answer")
}

// errLostDuringWrite is the answer to a write whose ledger lock was lost
// after it was sent to Fava and before it was settled.
func errLostDuringWrite(err error) error {
	return favaproxy.WithRetryAfter(fmt.Errorf("%w: %w", favaproxy.Errorf(favaproxy.EUnavailable,
		"the ledger lock was lost while the write was in progress; the next writer keeps it if it is complete or puts the files back; retry later (with the same Idempotency-Key to learn its outcome)"), err),
		retryAfterLockLost)
}

// durable fsyncs the files the write changed: the write is then written,
// waiting for commit.
func (g *guard) durable() (settled, error) {
	t0 := time.Now()
	err := g.l.rb.fsyncChanged(g.m)
	g.l.metrics.Fsync(g.l.slug, time.Since(t0))
	if err != nil {
		// The write is in the files but may not survive a power cut; the
		// rollback stays hot and the next writer settles it.
		g.l.unsettled.Store(true)
		return unsettled, fmt.Errorf("%w: %w", favaproxy.Errorf(favaproxy.EInsufficientStorage,
			"the write could not be made durable"), err)
	}
	return written, nil
}

// rollBack restores the files that differ from their pre-images and
// commits the rollback: nothing was written. why goes to the log.
func (g *guard) rollBack(why string) (settled, error) {
	l := g.l
	if err := l.verifyHold(context.Background()); err != nil {
		// Another holder may be writing the files now: nothing is put
		// back under it. The rollback stays hot; the next holder settles
		// it (recoverHot), keeping a complete write.
		l.unsettled.Store(true)
		return unsettled, errLostDuringWrite(err)
	}
	restored, err := l.rb.restore(g.m)
	if err != nil {
		l.unsettled.Store(true)
		l.log.Error("rollback failed; writes wait until it succeeds", "ledger", l.slug, "kind", g.m.Kind,
			"request_ids", g.m.RequestIDs, "err", err.Error())
		return unsettled, fmt.Errorf("%w: %w", favaproxy.Errorf(favaproxy.EUnavailable,
			"the ledger could not be restored after a failed write; writes are refused until it is"), err)
	}
	if len(restored) > 0 {
		l.metrics.Rollback(l.slug, RollbackRestored)
		l.log.Warn("rolled back a failed write", "ledger", l.slug, "kind", g.m.Kind, "why", why,
			"files", restored, "request_ids", g.m.RequestIDs)
		l.recordRecovery(g.m, "rolled back: "+why, restored)
	}
	g.commitNow()
	return nothing, nil
}

// commit ends a written write's rollback, once its journal records are
// appended.
func (g *guard) commit() {
	if g.m != nil {
		g.commitNow()
		g.l.metrics.Rollback(g.l.slug, RollbackCommitted)
	}
}

func (g *guard) commitNow() {
	if err := g.l.rb.commit(); err != nil {
		g.l.log.Error("commit rollback", "ledger", g.l.slug, "err", err.Error())
	}
}

// recordRecovery appends the journal record of a rollback that put files
// back or of a hot rollback settled after a crash.
func (l *Ledger) recordRecovery(m *manifest, note string, files []string) {
	rec := journal.Record{Ledger: l.slug, Kind: m.Kind, Route: "recovery", Outcome: journal.OutcomeRolledBack,
		Status: 0, Note: note}
	if len(m.RequestIDs) > 0 {
		rec.RequestID = m.RequestIDs[0]
	}
	for _, f := range files {
		rec.Files = append(rec.Files, journal.FileChange{Path: f})
	}
	rec.Fence = l.fenceToken()
	if err := l.journal.Append(rec); err != nil {
		l.log.Error("journal append failed", "ledger", l.slug, "err", err.Error())
	}
}

// recordKeptKeys appends, for each keyed request of a write kept after a
// crash that the journal has no ok record of, the record its answer would
// have had, so that a retry of its key is replayed.
func (l *Ledger) recordKeptKeys(m *manifest) {
	var recs []journal.Record
	for _, k := range m.Keyed {
		if _, ok, err := l.journal.Lookup(k.Key); err != nil || ok {
			continue
		}
		recs = append(recs, journal.Record{
			RequestID: k.RequestID, User: k.User, Ledger: l.slug, Route: addEntriesRoute,
			Kind: string(favaproxy.KindAddEntries), Key: k.Key, Fingerprint: k.Fingerprint, Entries: k.Entries,
			Outcome: journal.OutcomeOK, Status: http.StatusOK,
			Reply: fava.SuccessBody(l.styleOf(), fava.StoredMessage(k.Entries), l.mtime()),
			Note:  "kept after an interrupted write", Fence: l.fenceToken(),
		})
	}
	if err := l.journal.AppendBatch(recs); err != nil {
		l.log.Error("journal append failed", "ledger", l.slug, "err", err.Error())
	}
}

// Recovery is what settling a rollback left hot by a crash found and did.
type Recovery struct {
	// Hot is set when there was such a rollback.
	Hot bool `json:"hot"`
	// Started, PID, Host and Kind describe the interrupted write.
	Started time.Time `json:"started"`
	PID     int       `json:"pid"`
	Host    string    `json:"host,omitempty"`
	Kind    string    `json:"kind"`
	// RequestIDs are the interrupted write's requests.
	RequestIDs []string `json:"request_ids,omitempty"`
	// Settled is set once the rollback was settled: Kept when the write
	// was complete and kept; otherwise Restored lists the files put back
	// (none when they were as before).
	Settled  bool     `json:"settled"`
	Kept     bool     `json:"kept"`
	Restored []string `json:"restored,omitempty"`
}

// errStillRunning is the answer to a write that finds a hot rollback whose
// request may still be running at Fava.
type errStillRunning struct{ until time.Time }

func (e *errStillRunning) Error() string {
	return "an earlier write that fava did not answer may still be running until " + e.until.Format(time.RFC3339)
}

// recoverHot settles a rollback left hot by a crash, by a timeout or by a
// rollback that failed, holding the ledger lock. A complete write is kept
// at once. Otherwise, while the interrupted request may still be running
// at Fava (until its deadline), nothing is touched and the error says so;
// after it, once the files have rested for durability.quiet, a write the
// journal recorded as answered, or that is complete, is kept, and any
// other is rolled back. It is recorded in the journal and logged.
func (l *Ledger) recoverHot(ctx context.Context) (Recovery, error) {
	m, err := l.rb.hot()
	if err != nil || m == nil {
		if err == nil {
			l.unsettled.Store(false)
		}
		return Recovery{}, err
	}
	rec := Recovery{Hot: true, Started: m.Started, PID: m.PID, Host: m.Host, Kind: m.Kind, RequestIDs: m.RequestIDs}
	keep := l.rb.complete(m, l.index)
	if !keep {
		deadline := m.Deadline
		if deadline.IsZero() {
			// The process that sent it died waiting for Fava's answer,
			// which it would have waited for at most timeouts.upstream.
			deadline = m.Started.Add(l.all.Timeouts.Upstream)
		}
		if time.Now().Before(deadline) {
			l.unsettled.Store(true)
			return rec, &errStillRunning{until: deadline}
		}
		l.log.Warn("found an interrupted write; settling it", "ledger", l.slug, "kind", m.Kind,
			"started", m.Started, "pid", m.PID, "request_ids", m.RequestIDs)
		waitQuiet(ctx, m, l.all.Durability.Quiet)
		if ctx.Err() != nil {
			return rec, ctx.Err()
		}
		keep = l.answered(m) || l.rb.complete(m, l.index)
	}
	if keep {
		if err := l.rb.fsyncChanged(m); err != nil {
			return rec, fmt.Errorf("recover: %w", err)
		}
		rec.Kept = true
		l.recordRecovery(m, "interrupted write kept: complete", nil)
		l.recordKeptKeys(m)
	} else {
		if err := l.verifyHold(ctx); err != nil {
			return rec, fmt.Errorf("recover: %w", err)
		}
		restored, err := l.rb.restore(m)
		if err != nil {
			return rec, fmt.Errorf("recover: %w", err)
		}
		rec.Restored = restored
		l.recordRecovery(m, "interrupted write rolled back", restored)
	}
	if err := l.rb.commit(); err != nil {
		return rec, fmt.Errorf("recover: %w", err)
	}
	rec.Settled = true
	l.unsettled.Store(false)
	l.metrics.Rollback(l.slug, RollbackRecovered)
	l.log.Warn("settled an interrupted write", "ledger", l.slug, "kind", m.Kind, "kept", rec.Kept, "restored", rec.Restored)
	if err := l.index.Refresh(); err != nil {
		l.log.Warn("refresh index", "ledger", l.slug, "err", err.Error())
	}
	return rec, nil
}

// answered reports whether the journal holds an ok record of one of m's
// requests: favaproxy verified the write and answered (or was about to)
// before the crash.
func (l *Ledger) answered(m *manifest) bool {
	if len(m.RequestIDs) == 0 {
		return false
	}
	found := false
	stop := errors.New("found")
	_ = journal.Read(l.journal.Path(), journal.Filter{Since: m.Started.Add(-time.Second)}, func(r journal.Record) error {
		if r.Outcome == journal.OutcomeOK && slices.Contains(m.RequestIDs, r.RequestID) {
			found = true
			return stop
		}
		return nil
	})
	return found
}
