package ledger

import (
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/journal"
)

// snapshot is the checksum of each of a ledger's files (the main file and
// every include) at one moment, taken holding the ledger lock. Two
// snapshots, before and after a write, tell what the write changed; they
// are the one record of that, for the journal and for the decisions that
// depend on whether anything was written.
type snapshot struct {
	main string
	sums map[string]string
	// err is the failure to refresh the index; sums are then what the
	// index last knew.
	err error
}

// snapshot refreshes the index and returns the checksums of the ledger's
// files. It must run holding the ledger lock.
func (l *Ledger) snapshot() snapshot {
	err := l.index.Refresh()
	if err != nil {
		l.log.Warn("refresh index", "ledger", l.slug, "err", err.Error())
	}
	lg := l.index.Ledger()
	s := snapshot{main: lg.Main, sums: make(map[string]string, len(lg.Files)), err: err}
	for _, p := range lg.Files {
		if f, ok := l.index.File(p); ok {
			s.sums[p] = f.Sum
		}
	}
	return s
}

// same reports whether both snapshots were read and no file differs.
func (s snapshot) same(after snapshot) bool {
	return s.err == nil && after.err == nil && len(s.sums) > 0 && maps.Equal(s.sums, after.sums)
}

// changes returns the files whose checksum differs between s and after,
// sorted by path; when none does, the file about (or else the main file)
// with its checksums.
func (s snapshot) changes(after snapshot, about string) []journal.FileChange {
	var out []journal.FileChange
	for p, b := range s.sums {
		if a := after.sums[p]; a != b {
			out = append(out, journal.FileChange{Path: p, Before: b, After: a})
		}
	}
	for p, a := range after.sums {
		if _, ok := s.sums[p]; !ok {
			out = append(out, journal.FileChange{Path: p, After: a})
		}
	}
	if len(out) > 0 {
		slices.SortFunc(out, func(x, y journal.FileChange) int { return strings.Compare(x.Path, y.Path) })
		return out
	}
	if about == "" {
		about = s.main
	}
	return []journal.FileChange{{Path: about, Before: s.sums[about], After: after.sums[about]}}
}

// The audit trail of writes other than add_entries (which records its own,
// addentries.go).
//
// Every write that took the ledger lock leaves one record in the journal:
// who, when, which route (METHOD /path), the kind, the request ID, the
// outcome (ok, merged, relocated, conflict, error), the status answered and
// the checksums of the files it changed, from snapshots taken right after
// the lock is taken and right before it is released (for the last attempt
// of a write that is retried). When no file changed, the file the write
// was about (the file of a PUT source, of a relocated slice edit, the
// accounts file of add_account) or else the main file is recorded with
// equal checksums. A write refused before it waited for the lock (a bad
// body, a full queue, a lock timeout) is not recorded.

// auditState is what a write's record needs to know of the files.
type auditState struct {
	// about is the file the write was about, when its handler knows it.
	about         string
	before, after *snapshot
}

// auditLocked takes the snapshot of req's ledger right after its lock was
// taken (auditWrite takes the one after, before the lock is released) and
// returns release. add_entries batches keep their own records.
func (l *Ledger) auditLocked(req *Request, release func()) func() {
	if req.add != nil {
		return release
	}
	if req.audit == nil {
		req.audit = &auditState{}
	}
	before := l.snapshot()
	req.audit.before, req.audit.after = &before, nil
	return release
}

// touches tells the audit trail which file req was about.
func (req *Request) touches(file string) {
	if req.audit == nil {
		req.audit = &auditState{}
	}
	req.audit.about = file
}

// auditWrite appends the record of req, answered with resp or err, to the
// journal, with the files as they are now; the caller holds the ledger
// lock. A write that never held the ledger lock, and add_entries writes
// (which record themselves), are skipped. A failed append is logged at
// error level and does not change the answer.
func (l *Ledger) auditWrite(req *Request, resp *Response, err error) {
	a := req.audit
	if req.add != nil || a == nil || a.before == nil {
		return
	}
	now := l.snapshot()
	a.after = &now
	after := a.after
	rec := journal.Record{
		RequestID: req.RequestID,
		User:      string(req.User),
		Ledger:    l.slug,
		Route:     req.Route,
		Kind:      string(req.Kind),
		Files:     a.before.changes(*after, a.about),
		Batch:     req.Stats.Batch,
		Fence:     l.fenceToken(),
	}
	rec.Outcome, rec.Status, rec.Note = auditOutcome(resp, err)
	if jerr := l.journal.Append(rec); jerr != nil {
		l.log.Error("journal append failed", "ledger", l.slug,
			"kind", string(req.Kind), "request_id", req.RequestID, "err", jerr.Error())
	}
}

// auditOutcome returns the outcome, status and note of a write's record.
func auditOutcome(resp *Response, err error) (outcome string, status int, note string) {
	switch {
	case err != nil:
		if favaproxy.ErrorCode(err) == favaproxy.EConflict {
			return journal.OutcomeConflict, favaproxy.HTTPStatus(err), err.Error()
		}
		return journal.OutcomeError, favaproxy.HTTPStatus(err), err.Error()
	case resp == nil:
		return journal.OutcomeError, http.StatusInternalServerError, "no answer"
	}
	rep := fava.Classify(resp.Status, resp.Header, resp.Body)
	switch {
	case resp.Status == http.StatusConflict:
		return journal.OutcomeConflict, resp.Status, rep.Message
	case resp.Status >= 400:
		return journal.OutcomeError, resp.Status, rep.Message
	case rep.Outcome == fava.Conflict:
		return journal.OutcomeConflict, resp.Status, rep.Message
	case rep.Outcome == fava.ClientError || rep.Outcome == fava.UnknownHash:
		return journal.OutcomeError, resp.Status, rep.Message
	case resp.Header.Get(MergedHeader) == "true":
		return journal.OutcomeMerged, resp.Status, ""
	case resp.Header.Get(RelocatedHeader) == "true":
		return journal.OutcomeRelocated, resp.Status, ""
	}
	return journal.OutcomeOK, resp.Status, ""
}
