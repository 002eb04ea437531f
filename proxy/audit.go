package proxy

import (
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/journal"
)

// The audit trail.
//
// Every write that took its ledger's lock leaves one record in the ledger's
// journal: who, when, which route (METHOD /path), the kind, the request ID,
// the outcome (ok, merged, relocated, conflict, error), the status answered
// and the checksums of the files it touched before and after. add_entries
// writes its own records (addentries.go, idempotency.go), which idempotency
// reads back; the other kinds are recorded here, without an idempotency key
// (journal lookups by key belong to add_entries alone).
//
// The checksums are taken from the ledger's index, refreshed holding the
// ledger lock: right after the lock is taken and right before it is
// released, for the last attempt of a write that is retried. The files
// whose checksum changed are recorded; when none did, the file the write
// was about (the file of a PUT source, of a relocated slice edit, the
// accounts file of add_account) or else the ledger's main file is recorded
// with equal checksums. A write refused before it waited for the lock (a
// bad body, a full queue, a lock timeout) is not recorded.

// journalOnce holds a ledger's journal, opened on first use.
type journalOnce struct {
	once sync.Once
	j    *journal.Journal
	err  error
}

// journalOf returns l's journal, opening it on first use.
func (s *Server) journalOf(l *ledger) (*journal.Journal, error) {
	jo := &l.journal
	jo.once.Do(func() {
		jo.j, jo.err = journal.Open(l.cfg.StatePath(), l.cfg.File)
	})
	return jo.j, jo.err
}

// auditState is what a write's record needs to know of the files: their
// checksums when the ledger lock was last taken and when it was released.
type auditState struct {
	// main is the ledger's main file.
	main string
	// file is the file the write was about, when its handler knows it.
	file          string
	before, after map[string]string
}

// ledgerSums refreshes l's index and returns the checksum of each of its
// files. It must run holding l's lock. On a failed refresh it returns
// what the index last knew.
func (s *Server) ledgerSums(l *ledger) (main string, sums map[string]string) {
	if err := l.index.Refresh(); err != nil {
		s.log.Warn("refresh index for the journal", slog.String("ledger", l.slug), slog.String("err", err.Error()))
	}
	lg := l.index.Ledger()
	sums = make(map[string]string, len(lg.Files))
	for _, p := range lg.Files {
		if f, ok := l.index.File(p); ok {
			sums[p] = f.Sum
		}
	}
	return lg.Main, sums
}

// auditLocked records the checksums of wr's ledger right after its lock was
// taken, and returns release wrapped so that it records them again just
// before the lock is released. add_entries batches keep their own records.
func (s *Server) auditLocked(wr *writeRequest, release func()) func() {
	if wr.add != nil {
		return release
	}
	if wr.audit == nil {
		wr.audit = &auditState{}
	}
	main, before := s.ledgerSums(wr.ledger)
	wr.audit.main, wr.audit.before, wr.audit.after = main, before, nil
	return func() {
		_, wr.audit.after = s.ledgerSums(wr.ledger)
		release()
	}
}

// touches tells the audit trail which file wr was about.
func (wr *writeRequest) touches(file string) {
	if wr.audit == nil {
		wr.audit = &auditState{}
	}
	wr.audit.file = file
}

// auditWrite appends the record of wr, answered with resp or err, to its
// ledger's journal. A write that never held the ledger lock, and
// add_entries writes (which record themselves), are skipped. A failed
// append is logged at error level and does not change the answer.
func (s *Server) auditWrite(r *http.Request, wr *writeRequest, resp *writeResponse, err error) {
	a := wr.audit
	if wr.add != nil || a == nil || a.before == nil {
		return
	}
	rec := journal.Record{
		RequestID: wr.requestID,
		User:      string(wr.user),
		Ledger:    wr.ledger.slug,
		Route:     r.Method + " " + r.URL.Path,
		Kind:      string(wr.kind),
		Files:     a.changes(),
		Batch:     wr.batchSize,
	}
	rec.Outcome, rec.Status, rec.Note = auditOutcome(resp, err)
	j, jerr := s.journalOf(wr.ledger)
	if jerr == nil {
		jerr = j.Append(rec)
	}
	if jerr != nil {
		s.log.Error("journal append failed", slog.String("ledger", wr.ledger.slug),
			slog.String("kind", string(wr.kind)), slog.String("request_id", wr.requestID), slog.String("err", jerr.Error()))
	}
}

// changes returns the files whose checksum differs between before and
// after, sorted by path; when none does, the file the write was about (or
// the main file) with its checksums.
func (a *auditState) changes() []journal.FileChange {
	after := a.after
	if after == nil {
		after = a.before
	}
	var out []journal.FileChange
	for p, b := range a.before {
		if after[p] != b {
			out = append(out, journal.FileChange{Path: p, Before: b, After: after[p]})
		}
	}
	for p, v := range after {
		if _, ok := a.before[p]; !ok {
			out = append(out, journal.FileChange{Path: p, After: v})
		}
	}
	if len(out) > 0 {
		slices.SortFunc(out, func(x, y journal.FileChange) int { return strings.Compare(x.Path, y.Path) })
		return out
	}
	p := a.file
	if p == "" {
		p = a.main
	}
	return []journal.FileChange{{Path: p, Before: a.before[p], After: after[p]}}
}

// auditOutcome returns the outcome, status and note of a write's record.
func auditOutcome(resp *writeResponse, err error) (outcome string, status int, note string) {
	switch {
	case err != nil:
		if favaproxy.ErrorCode(err) == favaproxy.EConflict {
			return journal.OutcomeConflict, httpStatus(err), err.Error()
		}
		return journal.OutcomeError, httpStatus(err), err.Error()
	case resp == nil:
		return journal.OutcomeError, http.StatusInternalServerError, "no answer"
	case resp.status == http.StatusConflict:
		return journal.OutcomeConflict, resp.status, fava.Classify(resp.status, resp.header, resp.body).Message
	case resp.status >= 400:
		return journal.OutcomeError, resp.status, fava.Classify(resp.status, resp.header, resp.body).Message
	}
	switch rep := fava.Classify(resp.status, resp.header, resp.body); rep.Outcome {
	case fava.Conflict:
		return journal.OutcomeConflict, resp.status, rep.Message
	case fava.ClientError, fava.UnknownHash:
		return journal.OutcomeError, resp.status, rep.Message
	}
	switch {
	case resp.header.Get(MergedHeader) == "true":
		return journal.OutcomeMerged, resp.status, ""
	case resp.header.Get(RelocatedHeader) == "true":
		return journal.OutcomeRelocated, resp.status, ""
	}
	return journal.OutcomeOK, resp.status, ""
}
