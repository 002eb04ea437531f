package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/journal"
)

// The add_entries write path, top to bottom: prepareAdd (before any lock),
// addEntries (the handler: join the group commit), execAdds (one batch
// under the ledger lock: check keys), commitAdds (one call to Fava, and
// the answer of each request). See doc.go for the rules.

// addEntriesRoute is the route name in fingerprints and journal records.
const addEntriesRoute = "add_entries"

// ReplayedHeader marks a replayed answer.
const ReplayedHeader = "Idempotent-Replayed"

// unknownNote started the note of an OutcomeError record whose outcome
// was unknown, before OutcomeUnknown existed; such records are still read
// as unknown.
const unknownNote = "outcome unknown: "

// addRequest is one add_entries request ready to be written.
type addRequest struct {
	req *Request
	// key is the idempotency key as a link (prefix included), "" for none.
	key string
	// fingerprint identifies the request as the client sent it.
	fingerprint string
	// entries are the entries to send, with the key added.
	entries []json.RawMessage
	// deltas are, for each of the request's balance requirements, the
	// units the entries move into its account.
	deltas []*big.Rat
	// typed are the entries as read, kept for a request with balance
	// requirements.
	typed []fava.Entry
}

// addFingerprint identifies an add_entries request for its idempotency
// key: its entries and, when it has any, its conditions (If-Match,
// If-None-Match, balance requirements), so that a key reused with other
// conditions is a different request (422), not a replay of an answer given
// under the old ones.
func addFingerprint(slug string, entries []json.RawMessage, req *Request) string {
	fp := fava.Fingerprint(addEntriesRoute, slug, entries)
	var cond []string
	if p := req.Precondition; p.Set() {
		cond = append(cond, "If-Match: "+strings.Join(p.IfMatch, ", "))
		if p.IfNoneMatchAny {
			cond = append(cond, "If-None-Match: *")
		}
	}
	for _, r := range req.Require {
		cond = append(cond, RequireHeader+": "+r.Text)
	}
	if len(cond) == 0 {
		return fp // as before conditions existed: keys in old journals still match
	}
	return checksum.String(fp + "\n" + strings.Join(cond, "\n"))
}

// prepareAdd checks an add_entries write before it waits for any lock: it
// parses, validates and marks the entries, and returns a function that
// ends the key's in-flight mark, to be called once the write is answered.
// Other writes pass untouched.
func (l *Ledger) prepareAdd(req *Request) (done func(), err error) {
	if req.Kind != favaproxy.KindAddEntries || req.Method != http.MethodPut {
		if req.Require != nil {
			return nil, favaproxy.FieldErrorf(RequireHeader, "balance requirements apply to add_entries only")
		}
		return func() {}, nil
	}
	parsed, err := fava.ParseAddEntries(req.Body)
	if err != nil {
		return nil, err
	}
	opts := l.index.Ledger().Options
	roots := ledgerRoots(opts)
	if err := parsed.Validate(fava.Rules{Roots: roots}); err != nil {
		return nil, err
	}
	ar := &addRequest{
		req:         req,
		fingerprint: addFingerprint(l.slug, parsed.Entries, req),
		entries:     parsed.Entries,
	}
	if req.Require != nil {
		// A tolerance of the ledger's own makes Beancount round
		// interpolated amounts in ways not followed here.
		_, tolerance := opts["inferred_tolerance_default"]
		_, multiplier := opts["inferred_tolerance_multiplier"]
		if ar.deltas, err = requirementDeltas(req.Require, parsed.Typed, roots, tolerance || multiplier); err != nil {
			return nil, err
		}
		ar.typed = parsed.Typed
	}
	done = func() {}
	if req.IdempotencyKey != "" {
		idem := l.all.Idempotency
		key, err := favaproxy.ParseIdempotencyKey(req.IdempotencyKey, idem.Prefix)
		if err != nil {
			return nil, err
		}
		ar.key = key
		ar.entries = make([]json.RawMessage, len(parsed.Entries))
		for i, e := range parsed.Entries {
			if parsed.Typed[i].Type == fava.TypeTransaction {
				ar.entries[i], err = fava.AddLink(e, key)
			} else {
				ar.entries[i], err = fava.AddMeta(e, idem.MetaKey, key)
			}
			if err != nil {
				return nil, favaproxy.FieldErrorf(fmt.Sprintf("entries[%d]", i), "%v", err)
			}
		}
		if done, err = l.markInflight(key); err != nil {
			return nil, err
		}
	}
	req.add = ar
	return done, nil
}

// markInflight records key as being processed by this process. It fails
// with 409 and Retry-After when it already is.
func (l *Ledger) markInflight(key string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inflightKeys[key] {
		return nil, favaproxy.WithRetryAfter(favaproxy.Errorf(favaproxy.EConflict,
			"a request with this idempotency key is still being processed; retry later"), 1)
	}
	l.inflightKeys[key] = true
	return func() {
		l.mu.Lock()
		delete(l.inflightKeys, key)
		l.mu.Unlock()
	}, nil
}

// addEntries is the handler of add_entries: the request joins the ledger's
// group commit. A request prepareAdd did not prepare (not a PUT) is
// forwarded as it is.
func (l *Ledger) addEntries(ctx context.Context, req *Request) (*Response, error) {
	if req.add == nil {
		return l.underLock(l.forward)(ctx, req)
	}
	resp, err := l.adds.Do(ctx, req.add, int64(len(req.Body)))
	if req.Stats.LockWait == 0 {
		req.Stats.LockWait = time.Since(req.waitStart)
	}
	return resp, err
}

// execAdds is the group's exec: it runs one batch under the ledger lock.
func (l *Ledger) execAdds(ctx context.Context, items []*addRequest) ([]*Response, []error) {
	for _, ar := range items {
		ar.req.Stats.LockWait = time.Since(ar.req.waitStart)
		if ar.req.dequeue != nil {
			ar.req.dequeue()
		}
	}
	return l.writeAdds(ctx, items, l.snapshot())
}

// writeAdds answers the keyed requests of items whose key is already known
// (checkKey) and writes the others with one call to Fava. before is the
// ledger as it is now.
func (l *Ledger) writeAdds(ctx context.Context, items []*addRequest, before snapshot) ([]*Response, []error) {
	res := make([]*Response, len(items))
	errs := make([]error, len(items))
	var todo []int
	for i, ar := range items {
		switch {
		case ar.key != "" && before.err == nil:
			res[i], errs[i] = l.checkKey(ctx, ar, before)
			if res[i] == nil && errs[i] == nil {
				todo = append(todo, i)
			}
		case ar.key == "":
			todo = append(todo, i)
		case before.err != nil:
			errs[i] = fmt.Errorf("refresh index: %w: %w",
				favaproxy.Errorf(favaproxy.EInternal, "the ledger could not be read to check the idempotency key"), before.err)
		}
	}
	// A conditional request (batched alone) is written only if the ledger
	// is still at the version it names and its balance requirements hold;
	// a replay above came first.
	kept := todo[:0]
	for _, i := range todo {
		ar := items[i]
		if p := ar.req.Precondition; p.Set() && (before.err != nil || !p.holds(before.version())) {
			v := before.version()
			res[i] = l.preconditionFailed(v)
			l.appendAddRecords([]*addRequest{ar}, []journal.Record{refusedRecord(res[i], before, "precondition failed: ledger at "+v)})
			continue
		}
		if ar.req.Require != nil {
			res[i], errs[i] = l.checkRequirements(ctx, ar)
			if errs[i] != nil {
				l.appendAddRecords([]*addRequest{ar}, []journal.Record{{Outcome: journal.OutcomeError,
					Status: favaproxy.HTTPStatus(errs[i]), Files: before.changes(before, ""), Note: "balance requirements: " + errs[i].Error()}})
				continue
			}
			if res[i] != nil {
				l.appendAddRecords([]*addRequest{ar}, []journal.Record{refusedRecord(res[i], before, "balance requirement failed")})
				continue
			}
		}
		kept = append(kept, i)
	}
	todo = kept
	if len(todo) == 0 {
		return res, errs
	}
	batch := make([]*addRequest, len(todo))
	for k, i := range todo {
		batch[k] = items[i]
	}
	r, e := l.commitAdds(ctx, batch, before)
	for k, i := range todo {
		res[i], errs[i] = r[k], e[k]
	}
	return res, errs
}

// checkKey decides, under the ledger lock and on a fresh index, what to do
// with a keyed request: answer it from an earlier write (a replay, or an
// error) or write it (nil, nil). It records every answer it makes in the
// journal.
func (l *Ledger) checkKey(ctx context.Context, ar *addRequest, now snapshot) (*Response, error) {
	rec, ok, err := l.journal.Lookup(ar.key)
	if err != nil {
		return nil, fmt.Errorf("look up idempotency key: %w: %w",
			favaproxy.Errorf(favaproxy.EInternal, "the journal could not be read"), err)
	}
	found := l.keyCount(ar.key)
	switch {
	case ok && rec.User != string(ar.req.User):
		l.metrics.IdempotencyMismatch(l.slug)
		l.journalAnswer(ar, now, journal.OutcomeMismatch, http.StatusUnprocessableEntity, nil, "key of user "+rec.User)
		return nil, favaproxy.Errorf(favaproxy.EMismatch, "idempotency key was already used by another user")
	case ok && rec.Fingerprint != ar.fingerprint:
		l.metrics.IdempotencyMismatch(l.slug)
		l.journalAnswer(ar, now, journal.OutcomeMismatch, http.StatusUnprocessableEntity, nil, "fingerprint "+rec.Fingerprint)
		return nil, favaproxy.Errorf(favaproxy.EMismatch, "idempotency key was already used for a different request")
	case ok && found < rec.Entries:
		l.log.Error("idempotency key partially written", "ledger", l.slug, "key", ar.key,
			"sent", rec.Entries, "found", found, "request_id", ar.req.RequestID)
		return l.partialAnswer(ar, now, rec.Entries, found), nil
	case ok:
		resp := replayResponse(rec.Status, rec.Reply)
		l.metrics.IdempotentReplay(l.slug)
		l.journalAnswer(ar, now, journal.OutcomeReplayed, resp.Status, resp.Body, "")
		return resp, nil
	case found == 0:
		// An earlier attempt whose outcome is unknown (Fava did not
		// answer) may still be written by Fava: writing the request again
		// now could store it twice. Retries wait for as long as favaproxy
		// waits for Fava's answer to a write, counted from that attempt's
		// end; after that the attempt is taken as lost.
		last, seen, err := l.journal.Latest(ar.key)
		if err == nil && seen && isUnknown(last) {
			if wait := l.all.Timeouts.Upstream - time.Since(last.Time); wait > 0 {
				return nil, favaproxy.WithRetryAfter(favaproxy.Errorf(favaproxy.EUnavailable,
					"an earlier attempt with this idempotency key got no answer from fava and may still be written; retry later"),
					int(math.Ceil(wait.Seconds())))
			}
		}
	case found > 0:
		if last, seen, err := l.journal.Latest(ar.key); err == nil && seen &&
			last.User == string(ar.req.User) && last.Fingerprint == ar.fingerprint {
			if found < len(ar.entries) {
				// An earlier attempt of this request, recorded without
				// a success, left part of its entries: writing again
				// would store those twice, and so would another key.
				l.log.Error("idempotency key partially written", "ledger", l.slug, "key", ar.key,
					"sent", len(ar.entries), "found", found, "request_id", ar.req.RequestID)
				return l.partialAnswer(ar, now, len(ar.entries), found), nil
			}
			// An earlier attempt of this request, recorded without an
			// answer from Fava (its outcome unknown), landed after all.
			body := fava.SuccessBody(l.replyStyle(ctx), fava.StoredMessage(found), l.mtime())
			resp := replayResponse(http.StatusOK, body)
			l.metrics.IdempotentReplay(l.slug)
			l.journalAnswer(ar, now, journal.OutcomeOK, resp.Status, resp.Body, "an earlier attempt without an answer is in the ledger")
			return resp, nil
		}
		// In the ledger, but favaproxy has no record of the request that
		// wrote it (another tool used the link, or the journal was lost):
		// nothing to replay, and writing would store it twice.
		body := mustMarshal(map[string]any{"error": "idempotency key is already in the ledger, but favaproxy has no record of the request that wrote it; this request was not written; check the ledger before sending it again under another key", "found": found})
		l.journalAnswer(ar, now, journal.OutcomeConflict, http.StatusConflict, body, "found in the ledger, not in the journal")
		return &Response{Status: http.StatusConflict, Header: jsonHeader(), Body: body}, nil
	}
	return nil, nil
}

// isUnknown reports whether r records a keyed attempt whose outcome is
// unknown.
func isUnknown(r journal.Record) bool {
	return r.Outcome == journal.OutcomeUnknown ||
		r.Outcome == journal.OutcomeError && strings.HasPrefix(r.Note, unknownNote)
}

// commitAdds writes batch with one add_entries call and answers each of
// its requests. before is the ledger as it was just before the call, on
// a fresh index. The call runs under a rollback (rollback.go) of the files
// add_entries may change.
func (l *Ledger) commitAdds(ctx context.Context, batch []*addRequest, before snapshot) ([]*Response, []error) {
	res := make([]*Response, len(batch))
	errs := make([]error, len(batch))
	// The journal records of this call, appended together (one fsync)
	// before commitAdds returns, so before any answer is sent, and before
	// the rollback of a kept write is committed.
	var recAdds []*addRequest
	var recs []journal.Record
	record := func(ar *addRequest, r journal.Record) {
		recAdds, recs = append(recAdds, ar), append(recs, r)
	}
	st := unsettled
	var g *guard
	defer func() {
		l.appendAddRecords(recAdds, recs)
		if st == written {
			g.commit()
		}
	}()

	m := &manifest{Kind: string(favaproxy.KindAddEntries), Insert: true, AllKeyed: true}
	reqs := make([]*Request, len(batch))
	for i, ar := range batch {
		reqs[i] = ar.req
		m.Entries += len(ar.entries)
		if ar.key == "" {
			m.AllKeyed = false
			continue
		}
		if m.Keys == nil {
			m.Keys = map[string]int{}
		}
		m.Keys[ar.key] = len(ar.entries)
		m.Keyed = append(m.Keyed, keyedRequest{Key: ar.key, RequestID: ar.req.RequestID, User: string(ar.req.User),
			Fingerprint: ar.fingerprint, Entries: len(ar.entries)})
	}
	g, err := l.begin(m, reqs, l.addTargets(), nil)
	if err != nil {
		for i, ar := range batch {
			errs[i] = err
			record(ar, journal.Record{Outcome: journal.OutcomeError, Status: favaproxy.HTTPStatus(err),
				Files: before.changes(before, ""), Batch: len(batch), Note: err.Error()})
		}
		return res, errs
	}

	first := batch[0].req
	// Always as JSON: the body was read as JSON, and a request without a
	// JSON media type must not fail alone and succeed in a batch.
	h := first.Header.Clone()
	h.Set("Content-Type", "application/json")
	fw := Request{Kind: first.Kind, Method: first.Method, URL: first.URL, Host: first.Host, Header: h, Body: first.Body}
	body := first.Body
	if len(batch) > 1 || batch[0].key != "" {
		var all []json.RawMessage
		for _, ar := range batch {
			all = append(all, ar.entries...)
		}
		body = fava.AddEntriesBody(all)
	}
	fctx, cancel := context.WithTimeout(ctx, l.all.Timeouts.Upstream)
	resp, ferr := l.send(fctx, &fw, first.Method, first.URL, body)
	cancel()
	if fw.Stats.Batch > 0 { // sent
		l.metrics.Batch(l.slug, len(batch))
		for _, ar := range batch {
			ar.req.Stats.Upstream += fw.Stats.Upstream
			ar.req.Stats.Batch = len(batch)
		}
	}
	st, serr := g.settle(ctx, resp, ferr)
	after := l.snapshot()
	files := before.changes(after, "")
	// Nothing was written, in any of the ledger's files: the rollback
	// said so, or (without one) the files are as they were.
	unchanged := st == nothing || st == unsettled && serr == nil && before.same(after)

	var reply fava.Reply
	if ferr == nil {
		reply = resp.Reply
	}
	refused := ferr == nil && reply.Outcome != fava.UpstreamError && reply.Outcome != fava.Success
	switch {
	case st == unverified:
		// Fava said success, but the files do not show the write.
		for i, ar := range batch {
			errs[i] = serr
			record(ar, journal.Record{Outcome: journal.OutcomeError, Status: favaproxy.HTTPStatus(serr),
				Files: files, Batch: len(batch), Note: serr.Error()})
		}
		return res, errs

	case st == written && ferr == nil && reply.Outcome == fava.Success:
		for i, ar := range batch {
			r := toResponse(resp)
			if len(batch) > 1 {
				r.Body = fava.SuccessBody(reply.Style, fava.StoredMessage(len(ar.entries)), reply.Mtime)
			}
			if after.err == nil {
				// The version the write left, read under the lock.
				r.Header.Set("ETag", after.version())
			}
			res[i] = r
			record(ar, journal.Record{Outcome: journal.OutcomeOK, Status: r.Status,
				Reply: jsonOrNil(r.Body), Files: files, Batch: len(batch)})
		}
		return res, errs

	case refused && len(batch) > 1 && unchanged:
		// Refused and nothing written: each request alone, keys checked
		// again, so that the bad one fails alone.
		for i, ar := range batch {
			r, e := l.writeAdds(ctx, []*addRequest{ar}, l.snapshot())
			res[i], errs[i] = r[0], e[0]
		}
		return res, errs

	case refused && len(batch) == 1 && serr == nil && (unchanged || batch[0].key == ""):
		// Refused: Fava's answer, as it gave it. A keyed request that
		// Fava refused after writing part of it is answered below from
		// the entries its key is on.
		res[0] = toResponse(resp)
		record(batch[0], journal.Record{Outcome: journal.OutcomeError, Status: resp.Status,
			Reply: jsonOrNil(resp.Body), Files: files, Batch: 1, Note: reply.Message})
		return res, errs

	case st == nothing:
		// No answer (or not Fava's), and the files were found unchanged
		// or put back: nothing was written, and a retry is safe.
		if ferr == nil {
			ferr = fmt.Errorf("add entries: %w", favaproxy.Errorf(favaproxy.EUpstream, "fava's answer was not understood: %s", reply.Message))
		}
		e := nothingWritten(ferr)
		for i, ar := range batch {
			errs[i] = e
			record(ar, journal.Record{Outcome: journal.OutcomeError, Status: favaproxy.HTTPStatus(e),
				Files: files, Batch: len(batch), Note: e.Error()})
		}
		return res, errs
	}

	// The outcome is not known from the files alone: no answer, an answer
	// that is not Fava's JSON, or a refusal after which the ledger changed,
	// with no rollback to settle it (durability off, or a rollback that
	// failed and stays hot), or a write kept as complete without an
	// answer. Nothing is resent.
	switch {
	case serr != nil:
		ferr = serr
	case ferr == nil && refused:
		ferr = fmt.Errorf("add entries: %w", favaproxy.Errorf(favaproxy.EUpstream, "fava refused the write after changing the ledger: %s", reply.Message))
	case ferr == nil:
		ferr = fmt.Errorf("add entries: %w", favaproxy.Errorf(favaproxy.EUpstream, "fava's answer was not understood: %s", reply.Message))
	}
	for i, ar := range batch {
		switch {
		case ar.key != "" && after.err == nil && serr == nil:
			found := l.keyCount(ar.key)
			switch {
			case found >= len(ar.entries):
				body := fava.SuccessBody(l.replyStyle(ctx), fava.StoredMessage(found), l.mtime())
				res[i] = &Response{Status: http.StatusOK, Header: jsonHeader(), Body: body}
				record(ar, journal.Record{Outcome: journal.OutcomeOK, Status: http.StatusOK,
					Reply: body, Files: files, Batch: len(batch), Note: "found in the ledger after: " + ferr.Error()})
			case found > 0:
				l.log.Error("idempotency key partially written", "ledger", l.slug, "key", ar.key,
					"sent", len(ar.entries), "found", found, "request_id", ar.req.RequestID, "err", ferr.Error())
				res[i] = l.partialAnswer(ar, after, len(ar.entries), found)
			default:
				// Not there yet: Fava may still write it. checkKey holds
				// retries of the key off for a while.
				errs[i] = ferr
				record(ar, journal.Record{Outcome: journal.OutcomeUnknown, Status: favaproxy.HTTPStatus(ferr),
					Files: files, Batch: len(batch), Note: ferr.Error()})
			}
		case ar.key != "":
			errs[i] = ferr
			record(ar, journal.Record{Outcome: journal.OutcomeUnknown, Status: favaproxy.HTTPStatus(ferr),
				Files: files, Batch: len(batch), Note: ferr.Error()})
		case len(batch) == 1 && resp != nil && serr == nil:
			// Alone, without a key: Fava's answer as it is, as before.
			res[i] = toResponse(resp)
			record(ar, journal.Record{Outcome: journal.OutcomeError, Status: resp.Status,
				Reply: jsonOrNil(resp.Body), Files: files, Batch: 1, Note: ferr.Error()})
		default:
			errs[i] = ferr
			record(ar, journal.Record{Outcome: journal.OutcomeError, Status: favaproxy.HTTPStatus(ferr),
				Files: files, Batch: len(batch), Note: ferr.Error()})
		}
	}
	return res, errs
}

// addTargets returns the files add_entries may change: the main file,
// every file with an insert-entry option (Fava inserts an entry whose
// account matches the option's pattern before the option, in its file),
// and the file a default-file option names (from Fava 1.30: the option's
// file, or the file its value names relative to it).
func (l *Ledger) addTargets() []string {
	lg := l.index.Ledger()
	out := []string{lg.Main}
	add := func(f string) {
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	for _, f := range lg.Files {
		l.index.Any(f, func(b *beancount.Block) bool {
			if b.Kind != beancount.KindCustom || b.Value != "fava-option" {
				return false
			}
			// Fava reads the name with "-" as "_".
			switch strings.ReplaceAll(b.Narration, "_", "-") {
			case "insert-entry":
				add(f)
			case "default-file":
				add(f)
				if v := customValue(b.Text); v != "" {
					if !filepath.IsAbs(v) {
						v = filepath.Join(filepath.Dir(f), v)
					}
					add(filepath.Clean(v))
				}
			}
			return false
		})
	}
	return out
}

// quotedRe matches a Beancount string.
var quotedRe = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// customValue returns the third string of a custom directive's first line
// (a fava-option's value), unquoted, or "".
func customValue(text string) string {
	first, _, _ := strings.Cut(text, "\n")
	strs := quotedRe.FindAllString(first, 3)
	if len(strs) < 3 {
		return ""
	}
	v, err := strconv.Unquote(strs[2])
	if err != nil {
		return strings.Trim(strs[2], `"`)
	}
	return v
}

// keyCount counts the entries of the ledger that carry key, as of the last
// refresh of the index.
func (l *Ledger) keyCount(key string) int { return keyCount(l.index, key) }

// partialAnswer is the 409 for a key with fewer entries in the ledger than
// were sent; it is recorded in the journal.
func (l *Ledger) partialAnswer(ar *addRequest, now snapshot, sent, found int) *Response {
	msg := fmt.Sprintf("idempotency key is on %d of the %d entries sent: the earlier write was cut short or edited; check the ledger", found, sent)
	body := mustMarshal(map[string]any{"error": msg, "sent": sent, "found": found})
	l.journalAnswer(ar, now, journal.OutcomePartial, http.StatusConflict, body, "")
	return &Response{Status: http.StatusConflict, Header: jsonHeader(), Body: body}
}

// replyStyle returns the wire style of answers favaproxy makes up itself:
// the style of Fava's last reply or, before there was one, the style of
// Fava's answer to GET api/changed (a read every version serves), or
// StyleUnknown (encoded as 1.30) when that fails.
func (l *Ledger) replyStyle(ctx context.Context) fava.Style {
	if v := l.styleOf(); v != fava.StyleUnknown {
		return v
	}
	cctx, cancel := context.WithTimeout(ctx, l.all.Timeouts.Upstream)
	defer cancel()
	resp, err := l.client.Do(cctx, &fava.Request{Kind: favaproxy.KindRead, Method: http.MethodGet, URL: l.apiURL("changed", nil), Header: http.Header{}})
	if err != nil {
		return fava.StyleUnknown
	}
	l.noteStyle(resp.Reply.Style)
	return resp.Reply.Style
}

// replayResponse is a replayed answer. The journal keeps replies as
// compact JSON without the newline that Fava's jsonify ends them with, so
// it is put back.
func replayResponse(status int, body []byte) *Response {
	if len(body) > 0 && body[len(body)-1] != '\n' {
		body = append(body[:len(body):len(body)], '\n')
	}
	h := jsonHeader()
	h.Set(ReplayedHeader, "true")
	return &Response{Status: status, Header: h, Body: body}
}

// mtime is the ledger's main file modification time in nanoseconds, as
// Fava reports it, from the index.
func (l *Ledger) mtime() string {
	f, ok := l.index.File(l.index.Ledger().Main)
	if !ok {
		return "0"
	}
	return strconv.FormatInt(f.ModTime.UnixNano(), 10)
}

// journalAnswer appends the record of an answer that wrote nothing.
func (l *Ledger) journalAnswer(ar *addRequest, now snapshot, outcome string, status int, reply []byte, note string) {
	l.appendAddRecords([]*addRequest{ar}, []journal.Record{{
		Outcome: outcome, Status: status, Reply: jsonOrNil(reply), Note: note,
		Files: now.changes(now, ""),
	}})
}

// appendAddRecords completes recs[i] with the fields of ars[i] and appends
// them all with one fsync. A failed append is logged at error level and
// does not change the answers: the writes, if any, are in the ledger,
// which is the record of their keys.
func (l *Ledger) appendAddRecords(ars []*addRequest, recs []journal.Record) {
	if len(recs) == 0 {
		return
	}
	for i, ar := range ars {
		r := &recs[i]
		r.RequestID = ar.req.RequestID
		r.User = string(ar.req.User)
		r.Ledger = l.slug
		r.Route = addEntriesRoute
		r.Kind = string(favaproxy.KindAddEntries)
		r.Key = ar.key
		r.Fingerprint = ar.fingerprint
		r.Fence = l.fenceToken()
		if r.Outcome != journal.OutcomeRefused { // a refusal sent nothing
			r.Entries = len(ar.entries)
		}
	}
	if err := l.journal.AppendBatch(recs); err != nil {
		for _, ar := range ars {
			l.log.Error("journal append failed", "ledger", l.slug,
				"key", ar.key, "request_id", ar.req.RequestID, "err", err.Error())
		}
	}
}

// batchMaxItems is the group's cap on requests per batch: one when group
// commit is off, so that the same code path writes every request alone.
func batchMaxItems(b config.Batch) int {
	if b.Disabled {
		return 1
	}
	return b.MaxRequests
}

// batchGather returns the group's gather delay: none without batching.
func batchGather(b config.Batch) time.Duration {
	if b.Disabled {
		return 0
	}
	return b.GatherDelay
}

func jsonHeader() http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	return h
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("ledger: marshal: %v", err))
	}
	return append(b, '\n')
}

// jsonOrNil returns b if it is valid JSON, else nil (the journal keeps JSON
// replies only).
func jsonOrNil(b []byte) json.RawMessage {
	if len(b) == 0 || !json.Valid(b) {
		return nil
	}
	return b
}
