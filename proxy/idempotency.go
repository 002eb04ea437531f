package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/journal"
)

// Idempotency keys on add_entries.
//
// A client that sends an idempotency key gets exactly one copy of its
// entries in the ledger however often it retries. The ledger itself is the
// record: every Transaction of the request carries the link ^<prefix><key>
// and every Balance and Note the metadata <meta_key>: "<prefix><key>". Under
// the ledger lock, before anything is written, the key is looked up in the
// ledger's index (all included files) and in the ledger's journal:
//
//   - in the journal with an ok record: the first such record's reply is
//     replayed (its status and body, plus Idempotent-Replayed: true), after
//     checking that the same user sent the same request (fingerprint), else
//     422; when the ledger holds fewer entries with the key than the
//     record says were sent (a crash in the middle of Fava's one-by-one
//     writes, or a hand edit), 409 with both counts instead;
//   - in the ledger but not in the journal (written by another tool, or a
//     journal that was lost): replayed as a success in Fava's style,
//     "Stored N entries." with the N found, without a fingerprint check —
//     there is nothing to compare with;
//   - in neither: the request is written.
//
// A key still being processed by this process is answered 409 with
// Retry-After at once; across processes the ledger lock orders the
// requests and the later one finds the key.

// unknownNote starts the journal note of a keyed attempt whose outcome is
// unknown: Fava did not answer, and the key was not in the ledger after.
const unknownNote = "outcome unknown: "

// idemReplayHeader marks a replayed answer.
const idemReplayHeader = "Idempotent-Replayed"

// addState is a ledger's add_entries state: its journal, batcher and the
// keys in flight in this process. It is set up on first use. The index is
// the ledger's (ledger.index), shared with the other writes.
type addState struct {
	once    sync.Once
	initErr error

	journal *journal.Journal // the ledger's journal (ledger.journalOf)
	group   *group[*addRequest, *writeResponse]

	// mu guards inflight.
	mu sync.Mutex
	// inflight holds the keys (link form) of requests of this process that
	// are between their precheck and their answer.
	inflight map[string]bool
}

// addStateOf returns l's add_entries state, setting it up on first use:
// opening the journal and scanning the ledger once.
func (s *Server) addStateOf(l *ledger) (*addState, error) {
	st := &l.adds
	st.once.Do(func() {
		st.inflight = map[string]bool{}
		if err := l.index.Refresh(); err != nil {
			st.initErr = fmt.Errorf("index ledger: %w", err)
			return
		}
		j, err := s.journalOf(l)
		if err != nil {
			st.initErr = err
			return
		}
		st.journal = j
		st.group = &group[*addRequest, *writeResponse]{
			lock: func(ctx context.Context) (func(), error) {
				t0 := time.Now()
				release, err := l.lock.Lock(ctx)
				s.metrics.observeLockWait(l.slug, metricModeExclusive, time.Since(t0))
				if err != nil {
					return nil, lockErr(ctx, "ledger lock", err)
				}
				return s.timeHold(l.slug, metricModeExclusive, release), nil
			},
			exec: func(ctx context.Context, items []*addRequest) ([]*writeResponse, []error) {
				return s.execAdds(ctx, l, st, items)
			},
			maxItems: batchMaxItems(s.cfg.Batch),
			maxBytes: s.cfg.Batch.MaxBytes,
			gather:   batchGather(s.cfg.Batch),
		}
	})
	if st.initErr != nil {
		return nil, fmt.Errorf("prepare add_entries: %w: %w",
			favaproxy.Errorf(favaproxy.EInternal, "the ledger's index or journal is unavailable"), st.initErr)
	}
	return st, nil
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

// markInflight records key as being processed by this process. It fails
// with 409 and Retry-After when it already is.
func (st *addState) markInflight(key string) (release func(), err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.inflight[key] {
		return nil, withRetryAfter(favaproxy.Errorf(favaproxy.EConflict,
			"a request with this idempotency key is still being processed; retry later"), 1)
	}
	st.inflight[key] = true
	return sync.OnceFunc(func() {
		st.mu.Lock()
		delete(st.inflight, key)
		st.mu.Unlock()
	}), nil
}

// keyCount counts the entries of the ledger that carry key, as of the last
// refresh of the index: transactions with the link, and directives whose
// own metadata under the configured key has it as value.
func (l *ledger) keyCount(key string) int {
	n := 0
	for _, o := range l.index.Link(key) {
		if o.Kind == beancount.KindTransaction {
			n++
		}
	}
	for _, o := range l.index.MetaValue(key) {
		if o.Kind != beancount.KindTransaction {
			n++
		}
	}
	return n
}

// checkKey decides, under the ledger lock and on a fresh index, what to do
// with a keyed request: answer it from an earlier write (a replay, or an
// error) or write it (nil, nil). It records every answer it makes in the
// journal.
func (s *Server) checkKey(ctx context.Context, l *ledger, st *addState, ar *addRequest) (*writeResponse, error) {
	rec, ok, err := st.journal.Lookup(ar.key)
	if err != nil {
		return nil, fmt.Errorf("look up idempotency key: %w: %w",
			favaproxy.Errorf(favaproxy.EInternal, "the journal could not be read"), err)
	}
	found := l.keyCount(ar.key)
	switch {
	case ok && rec.User != string(ar.wr.user):
		err := favaproxy.Errorf(favaproxy.EMismatch, "idempotency key was already used by another user")
		s.metrics.idempotencyMismatch(l.slug)
		s.journalAnswer(l, st, ar, journal.OutcomeMismatch, http.StatusUnprocessableEntity, nil, "key of user "+rec.User)
		return nil, err
	case ok && rec.Fingerprint != ar.fingerprint:
		err := favaproxy.Errorf(favaproxy.EMismatch, "idempotency key was already used for a different request")
		s.metrics.idempotencyMismatch(l.slug)
		s.journalAnswer(l, st, ar, journal.OutcomeMismatch, http.StatusUnprocessableEntity, nil, "fingerprint "+rec.Fingerprint)
		return nil, err
	case ok && found < rec.Entries:
		s.log.Error("idempotency key partially written",
			slog.String("ledger", l.slug), slog.String("key", ar.key),
			slog.Int("sent", rec.Entries), slog.Int("found", found), slog.String("request_id", ar.wr.requestID))
		return s.partialAnswer(l, st, ar, rec.Entries, found)
	case ok:
		resp := replayResponse(rec.Status, rec.Reply)
		s.metrics.idempotentReplay(l.slug)
		s.journalAnswer(l, st, ar, journal.OutcomeReplayed, resp.status, resp.body, "")
		return resp, nil
	case found == 0:
		// An earlier attempt whose outcome is unknown (Fava did not
		// answer) may still be written by Fava: writing the request again
		// now could store it twice. Retries wait for as long as favaproxy
		// waits for Fava's answer to a write, counted from that attempt's
		// end; after that the attempt is taken as lost.
		last, seen, err := st.journal.Latest(ar.key)
		if err == nil && seen && last.Outcome == journal.OutcomeError && strings.HasPrefix(last.Note, unknownNote) {
			if wait := s.cfg.Timeouts.Upstream - time.Since(last.Time); wait > 0 {
				return nil, withRetryAfter(favaproxy.Errorf(favaproxy.EUnavailable,
					"an earlier attempt with this idempotency key got no answer from fava and may still be written; retry later"),
					int(math.Ceil(wait.Seconds())))
			}
		}
	case found > 0:
		// Written by another tool (or the journal was lost): there is no
		// fingerprint to compare, and no reply to give back but Fava's
		// usual one for what the ledger holds.
		body := fava.SuccessBody(s.replyStyle(ctx, l), fava.StoredMessage(found), l.mtime())
		resp := replayResponse(http.StatusOK, body)
		s.metrics.idempotentReplay(l.slug)
		s.journalAnswer(l, st, ar, journal.OutcomeReplayed, resp.status, resp.body, "found in the ledger, not in the journal")
		return resp, nil
	}
	return nil, nil
}

// replyStyle returns the wire style of answers favaproxy makes up itself:
// the style of Fava's last reply or, before there was one, the style of
// Fava's answer to GET api/changed (a read every version serves), or
// StyleUnknown (encoded as 1.30) when that fails.
func (s *Server) replyStyle(ctx context.Context, l *ledger) fava.Style {
	if v := styleOf(l); v != fava.StyleUnknown {
		return v
	}
	u := &url.URL{Scheme: s.upstream.Scheme, Host: s.upstream.Host, Path: s.prefix + "/" + l.slug + "/api/changed"}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.Timeouts.Upstream)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return fava.StyleUnknown
	}
	resp, err := s.transport.RoundTrip(req)
	if err != nil {
		return fava.StyleUnknown
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return fava.StyleUnknown
	}
	v := fava.DetectStyle(body)
	l.noteStyle(v)
	return v
}

// partialAnswer is the 409 for a key with fewer entries in the ledger than
// were sent.
func (s *Server) partialAnswer(l *ledger, st *addState, ar *addRequest, sent, found int) (*writeResponse, error) {
	msg := fmt.Sprintf("idempotency key is on %d of the %d entries sent: the earlier write was cut short or edited; check the ledger", found, sent)
	body := mustMarshal(map[string]any{"error": msg, "sent": sent, "found": found})
	s.journalAnswer(l, st, ar, journal.OutcomePartial, http.StatusConflict, body, "")
	return &writeResponse{status: http.StatusConflict, header: jsonHeader(), body: body}, nil
}

// replayResponse is a replayed answer. The journal keeps replies as
// compact JSON without the newline that Fava's jsonify ends them with, so
// it is put back.
func replayResponse(status int, body []byte) *writeResponse {
	if len(body) > 0 && body[len(body)-1] != '\n' {
		body = append(body[:len(body):len(body)], '\n')
	}
	h := jsonHeader()
	h.Set(idemReplayHeader, "true")
	return &writeResponse{status: status, header: h, body: body}
}

func jsonHeader() http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	return h
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("proxy: marshal: %v", err))
	}
	return append(b, '\n')
}

// mtime is the ledger's main file modification time in nanoseconds, as
// Fava reports it, from the index.
func (l *ledger) mtime() string {
	f, ok := l.index.File(l.index.Ledger().Main)
	if !ok {
		return "0"
	}
	return strconv.FormatInt(f.ModTime.UnixNano(), 10)
}

// mainSum returns the checksum of the ledger's main file as of the last
// refresh of the index.
func (l *ledger) mainSum() (path, sum string) {
	main := l.index.Ledger().Main
	f, ok := l.index.File(main)
	if !ok {
		return main, ""
	}
	return main, f.Sum
}

// journalAnswer appends the record of an answer that wrote nothing.
func (s *Server) journalAnswer(l *ledger, st *addState, ar *addRequest, outcome string, status int, reply []byte, note string) {
	path, sum := l.mainSum()
	s.appendJournal(l, st, ar, journal.Record{
		Outcome: outcome, Status: status, Reply: jsonOrNil(reply), Note: note,
		Files: []journal.FileChange{{Path: path, Before: sum, After: sum}},
	})
}

// appendJournal completes r with the request's fields and appends it. A
// failed append is logged at error level and does not change the answer:
// the write, if any, is in the ledger, which is the record of the key.
func (s *Server) appendJournal(l *ledger, st *addState, ar *addRequest, r journal.Record) {
	s.appendJournalBatch(l, st, []*addRequest{ar}, []journal.Record{r})
}

// completeRecord fills r with the request's fields.
func completeRecord(l *ledger, ar *addRequest, r journal.Record) journal.Record {
	r.RequestID = ar.wr.requestID
	r.User = string(ar.wr.user)
	r.Ledger = l.slug
	r.Route = addEntriesRoute
	r.Kind = string(favaproxy.KindAddEntries)
	r.Key = ar.key
	r.Fingerprint = ar.fingerprint
	r.Entries = len(ar.entries)
	return r
}

// appendJournalBatch completes recs[i] with the fields of ars[i] and appends
// them all with one fsync. A failure is logged as appendJournal's is.
func (s *Server) appendJournalBatch(l *ledger, st *addState, ars []*addRequest, recs []journal.Record) {
	if len(recs) == 0 {
		return
	}
	for i := range recs {
		recs[i] = completeRecord(l, ars[i], recs[i])
	}
	if err := st.journal.AppendBatch(recs); err != nil {
		for _, ar := range ars {
			s.log.Error("journal append failed", slog.String("ledger", l.slug),
				slog.String("key", ar.key), slog.String("request_id", ar.wr.requestID), slog.String("err", err.Error()))
		}
	}
}

// jsonOrNil returns b if it is valid JSON, else nil (the journal keeps JSON
// replies only).
func jsonOrNil(b []byte) json.RawMessage {
	if len(b) == 0 || !json.Valid(b) {
		return nil
	}
	return b
}
