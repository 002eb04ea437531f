package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/journal"
)

// The add_entries write path.
//
// Before any lock, the body is parsed and validated against Beancount's
// grammar (400 naming the field otherwise), the idempotency key is parsed
// (400 when it cannot be a link), the request's fingerprint is computed on
// the entries as sent, and the key is added to the entries (a link on
// transactions, metadata on balances and notes). A key this process is
// already handling is answered 409 with Retry-After: 1.
//
// Then the request joins its ledger's group commit (see group): whoever
// holds the ledger lock next takes every queued add_entries request (up to
// batch.max_requests and batch.max_bytes, in arrival order; one when
// batch.disabled) and, under the lock:
//
//  1. refreshes the ledger's index and answers the keyed requests whose key
//     is already known (see idempotency.go) without writing them;
//  2. sends the entries of all the others to Fava as one add_entries call,
//     in arrival order (with the headers of the first request);
//  3. on success answers each request "Stored N entries." with its own N,
//     in Fava's wire style and status; when Fava refuses a batch of several
//     requests and the ledger is unchanged, retries each request alone, so
//     that one bad request fails alone and each gets the answer Fava gives
//     it; when the outcome is not known (Fava did not answer in time, the
//     connection broke, Fava crashed) nothing is resent: keyed requests are
//     answered from what the ledger now holds (written, not written: the
//     error, or partly written: 409), requests without a key get 502 or 504
//     (or, alone, Fava's own answer);
//  4. appends one journal record per request before any answer is sent,
//     the records of one upstream call with one write and one fsync.
//
// Requests without a key are handled the same way, without the lookups.

// addEntriesRoute is the route name in fingerprints and journal records.
const addEntriesRoute = "add_entries"

// addRequest is one add_entries request ready to be written.
type addRequest struct {
	wr *writeRequest
	// key is the idempotency key as a link (prefix included), "" for none.
	key string
	// fingerprint identifies the request as the client sent it.
	fingerprint string
	// entries are the entries to send, with the key added.
	entries []json.RawMessage
}

// prepareWrite checks a write before it waits for any lock. For
// add_entries it parses, validates and marks the entries (see above), and
// returns a function that ends the key's in-flight mark, to be called once
// the write is answered. Other writes pass untouched.
func (s *Server) prepareWrite(wr *writeRequest) (done func(), err error) {
	if wr.kind != favaproxy.KindAddEntries || wr.method != http.MethodPut {
		return func() {}, nil
	}
	st, err := s.addStateOf(wr.ledger)
	if err != nil {
		return nil, err
	}
	parsed, err := fava.ParseAddEntries(wr.body)
	if err != nil {
		return nil, err
	}
	if err := parsed.Validate(fava.Rules{Roots: ledgerRoots(wr.ledger.index.Ledger().Options)}); err != nil {
		return nil, err
	}
	ar := &addRequest{
		wr:          wr,
		fingerprint: fava.Fingerprint(addEntriesRoute, wr.ledger.slug, parsed.Entries),
		entries:     parsed.Entries,
	}
	done = func() {}
	if wr.idempotencyKey != "" {
		key, err := favaproxy.ParseIdempotencyKey(wr.idempotencyKey, s.cfg.Idempotency.Prefix)
		if err != nil {
			return nil, err
		}
		ar.key = key
		ar.entries = make([]json.RawMessage, len(parsed.Entries))
		for i, e := range parsed.Entries {
			if parsed.Typed[i].Type == fava.TypeTransaction {
				ar.entries[i], err = fava.AddLink(e, key)
			} else {
				ar.entries[i], err = fava.AddMeta(e, s.cfg.Idempotency.MetaKey, key)
			}
			if err != nil {
				return nil, favaproxy.FieldErrorf(fmt.Sprintf("entries[%d]", i), "%v", err)
			}
		}
		if done, err = st.markInflight(key); err != nil {
			return nil, err
		}
	}
	wr.add = ar
	return done, nil
}

// handleAddEntries is the writeHandler of add_entries: the request joins
// its ledger's group commit. A request prepareWrite did not prepare (not a
// PUT) is forwarded as it is.
func (s *Server) handleAddEntries(ctx context.Context, wr *writeRequest) (*writeResponse, error) {
	if wr.add == nil {
		return s.underLedgerLock(s.forward)(ctx, wr)
	}
	st, err := s.addStateOf(wr.ledger)
	if err != nil {
		return nil, err
	}
	resp, err := st.group.Do(ctx, wr.add, int64(len(wr.body)))
	if wr.lockWait == 0 {
		wr.lockWait = time.Since(wr.waitStart)
	}
	return resp, err
}

// execAdds is the group's exec: it runs one batch under the ledger lock.
func (s *Server) execAdds(ctx context.Context, l *ledger, st *addState, items []*addRequest) ([]*writeResponse, []error) {
	res := make([]*writeResponse, len(items))
	errs := make([]error, len(items))
	for _, ar := range items {
		ar.wr.lockWait = time.Since(ar.wr.waitStart)
		if ar.wr.dequeue != nil {
			ar.wr.dequeue()
		}
	}
	refreshErr := l.index.Refresh()
	var todo []int
	for i, ar := range items {
		switch {
		case ar.key == "":
			todo = append(todo, i)
		case refreshErr != nil:
			errs[i] = fmt.Errorf("refresh index: %w: %w",
				favaproxy.Errorf(favaproxy.EInternal, "the ledger could not be read to check the idempotency key"), refreshErr)
		default:
			res[i], errs[i] = s.checkKey(ctx, l, st, ar)
			if res[i] == nil && errs[i] == nil {
				todo = append(todo, i)
			}
		}
	}
	if len(todo) == 0 {
		return res, errs
	}
	batch := make([]*addRequest, len(todo))
	for k, i := range todo {
		batch[k] = items[i]
	}
	r, e := s.commitAdds(ctx, l, st, batch)
	for k, i := range todo {
		res[i], errs[i] = r[k], e[k]
	}
	return res, errs
}

// commitAdds writes batch with one add_entries call and answers each of
// its requests. The index must be fresh.
func (s *Server) commitAdds(ctx context.Context, l *ledger, st *addState, batch []*addRequest) ([]*writeResponse, []error) {
	res := make([]*writeResponse, len(batch))
	errs := make([]error, len(batch))
	mainPath, before := l.mainSum()
	// The journal records of this call, appended together (one fsync)
	// before commitAdds returns, so before any answer is sent.
	var recAdds []*addRequest
	var recs []journal.Record
	record := func(ar *addRequest, r journal.Record) {
		recAdds, recs = append(recAdds, ar), append(recs, r)
	}
	defer func() { s.appendJournalBatch(l, st, recAdds, recs) }()

	fw := *batch[0].wr
	fw.header = fw.header.Clone()
	fw.upstreamTime = 0
	if len(batch) > 1 || batch[0].key != "" {
		var all []json.RawMessage
		for _, ar := range batch {
			all = append(all, ar.entries...)
		}
		fw.body = fava.AddEntriesBody(all)
		fw.header.Set("Content-Type", "application/json")
	}
	fctx, cancel := context.WithTimeout(ctx, s.cfg.Timeouts.Upstream)
	resp, ferr := s.forward(fctx, &fw)
	cancel()
	s.metrics.observeBatch(l.slug, len(batch))
	for _, ar := range batch {
		ar.wr.upstreamTime += fw.upstreamTime
		ar.wr.batchSize = len(batch)
	}
	refreshErr := l.index.Refresh()
	_, after := l.mainSum()
	files := []journal.FileChange{{Path: mainPath, Before: before, After: after}}

	var reply fava.Reply
	if ferr == nil {
		reply = s.classify(l, resp)
	}
	switch {
	case ferr == nil && reply.Outcome == fava.Success:
		h := resp.header.Clone()
		h.Del("Content-Length")
		for i, ar := range batch {
			body := resp.body
			if len(batch) > 1 {
				body = fava.SuccessBody(reply.Style, fava.StoredMessage(len(ar.entries)), reply.Mtime)
			}
			res[i] = &writeResponse{status: resp.status, header: h.Clone(), body: body}
			record(ar, journal.Record{Outcome: journal.OutcomeOK, Status: resp.status,
				Reply: jsonOrNil(body), Files: files, Batch: len(batch)})
		}
		return res, errs

	case ferr == nil && reply.Outcome != fava.UpstreamError && len(batch) > 1 && before != "" && before == after && refreshErr == nil:
		// Refused and nothing written: each request alone, so that the
		// bad one fails alone.
		for i, ar := range batch {
			r, e := s.commitAdds(ctx, l, st, []*addRequest{ar})
			res[i], errs[i] = r[0], e[0]
		}
		return res, errs

	case ferr == nil && reply.Outcome != fava.UpstreamError && len(batch) == 1:
		// Refused: Fava's answer, as it gave it.
		h := resp.header.Clone()
		h.Del("Content-Length")
		res[0] = &writeResponse{status: resp.status, header: h, body: resp.body}
		record(batch[0], journal.Record{Outcome: journal.OutcomeError, Status: resp.status,
			Reply: jsonOrNil(resp.body), Files: files, Batch: 1, Note: reply.Message})
		return res, errs
	}

	// The outcome is not known: no answer, an answer that is not Fava's
	// JSON, or a refusal after which the ledger changed. Nothing is resent.
	if ferr == nil {
		ferr = fmt.Errorf("add entries: %w", favaproxy.Errorf(favaproxy.EUpstream, "fava's answer was not understood: %s", reply.Message))
	}
	for i, ar := range batch {
		switch {
		case ar.key != "" && refreshErr == nil:
			found := l.keyCount(ar.key)
			switch {
			case found >= len(ar.entries):
				body := fava.SuccessBody(s.replyStyle(ctx, l), fava.StoredMessage(found), l.mtime())
				res[i] = &writeResponse{status: http.StatusOK, header: jsonHeader(), body: body}
				record(ar, journal.Record{Outcome: journal.OutcomeOK, Status: http.StatusOK,
					Reply: body, Files: files, Batch: len(batch), Note: "found in the ledger after: " + ferr.Error()})
			case found > 0:
				s.log.Error("idempotency key partially written", "ledger", l.slug, "key", ar.key,
					"sent", len(ar.entries), "found", found, "request_id", ar.wr.requestID, "err", ferr.Error())
				res[i], errs[i] = s.partialAnswer(l, st, ar, len(ar.entries), found)
			default:
				// Not there yet: Fava may still write it. checkKey holds
				// retries of the key off for a while (see unknownNote).
				errs[i] = ferr
				record(ar, journal.Record{Outcome: journal.OutcomeError, Status: httpStatus(ferr),
					Files: files, Batch: len(batch), Note: unknownNote + ferr.Error()})
			}
		case len(batch) == 1 && resp != nil:
			// Alone, without a key: Fava's answer as it is, as before.
			h := resp.header.Clone()
			h.Del("Content-Length")
			res[i] = &writeResponse{status: resp.status, header: h, body: resp.body}
			record(ar, journal.Record{Outcome: journal.OutcomeError, Status: resp.status,
				Reply: jsonOrNil(resp.body), Files: files, Batch: 1, Note: ferr.Error()})
		default:
			errs[i] = ferr
			record(ar, journal.Record{Outcome: journal.OutcomeError, Status: httpStatus(ferr),
				Files: files, Batch: len(batch), Note: ferr.Error()})
		}
	}
	return res, errs
}
