package ledger

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/journal"
	"github.com/favaproxy/favaproxy/merge"
)

// Retry-After values, in seconds, of the answers that ask a client to come
// back later.
const (
	retryAfterLockTimeout = 5 // the lock was busy for lock_timeout
	retryAfterQueueFull   = 1 // too many writes waiting already
	retryAfterLockLost    = 1 // the lock was lost while held
)

// Options are what Open needs besides the configuration.
type Options struct {
	// Slug is the ledger's URL slug at Fava.
	Slug string
	// APIBase is the URL of the ledger's JSON API at Fava, ending in
	// "/<slug>/api/" (with Fava's path prefix).
	APIBase *url.URL
	// Client sends writes to Fava. It must not resend a request (a
	// transport without keep-alive).
	Client *fava.Client
	// Locker is the ledger's readers–writer lock. Nil means an in-process
	// lock, which excludes nothing outside this process.
	Locker Locker
	// Metrics receives measurements. Nil means none.
	Metrics Metrics
	// Logger receives log lines. Nil means slog.Default().
	Logger *slog.Logger
	// RetryClock is the clock of the retries' backoff. Nil means the
	// system clock; tests replace it.
	RetryClock backoff.Clock
	// RetrySleep waits between retries, d or until ctx ends (then it
	// returns ctx's error). Nil means a timer; tests replace it so that
	// they never sleep.
	RetrySleep func(ctx context.Context, d time.Duration) error
	// Sync makes a file's data durable. Nil means (*os.File).Sync; tests
	// record the order of fsyncs and answers.
	Sync func(*os.File) error
}

// Ledger is one ledger Fava serves and everything favaproxy keeps for it:
// its lock, the per-user locks in front of it, its index, the versions of
// its files for merges, its journal, its group commit and Fava's wire
// style. Open it with Open, close it with Close.
type Ledger struct {
	slug    string
	cfg     config.Ledger
	all     config.Config
	apiBase *url.URL
	client  *fava.Client
	log     *slog.Logger
	metrics Metrics

	// lock is the ledger's readers–writer lock (across processes when
	// configured so): writes hold it exclusively, reads shared.
	lock Locker
	// users orders each user's writes; taken before lock, never after.
	users userLocks
	// waiting counts writes that wait for a user or the ledger lock,
	// bounded by limits.queue_depth.
	waiting atomic.Int64
	// index knows the ledger's files, open accounts, entry slices and
	// idempotency keys. It is the ledger's one index, used by every write;
	// writes refresh it holding the ledger lock.
	index *beancount.Index
	// versions remembers texts of the ledger's files by checksum
	// (merge.cache_bytes), for three-way merges of stale PUT source.
	versions *merge.Versions
	// journal is the ledger's journal of writes: idempotency keys and the
	// audit trail. The journal re-opens its file when it is replaced.
	journal *journal.Journal
	// rb is the rollback journal: pre-images of the files a write may
	// change (rollback.go).
	rb *rollbacks
	// rejectedAtOpen is how many lines Beancount would reject the ledger
	// had when it was opened; Check reports more (a torn file).
	rejectedAtOpen int
	// vcache remembers the ledger's version for reads (version.go).
	vcache atomic.Pointer[versionCache]
	// unsettled is set while a rollback is left hot (a request Fava did
	// not answer in time, a rollback that failed, a crash found at open)
	// until a writer settles it; /readyz reports it.
	unsettled atomic.Bool
	// adds is the group commit of add_entries.
	adds *group[*addRequest, *Response]
	// handlers carries out each kind of write (see newHandlers).
	handlers map[favaproxy.Kind]handler
	// retry is the backoff of retried writes.
	retry retrier
	// style is the fava.Style of Fava's last classified answer, for the
	// answers favaproxy writes itself.
	style atomic.Int32

	// inflight counts the writes in Write, so that Close waits for them.
	inflight sync.WaitGroup
	// mu guards inflight's Add against Close and inflightKeys.
	mu     sync.Mutex
	closed bool
	// inflightKeys holds the idempotency keys (link form) of requests of
	// this process that are between their check and their answer.
	inflightKeys map[string]bool
}

// Open opens the ledger cfg of the configuration all: it reads the
// ledger's files into its index and opens its journal, failing if either
// cannot be done.
func Open(ctx context.Context, all config.Config, cfg config.Ledger, o Options) (*Ledger, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if o.APIBase == nil {
		return nil, errors.New("open ledger: no API base URL")
	}
	l, err := openState(all, cfg, o)
	if err != nil {
		return nil, err
	}
	l.apiBase, l.client = o.APIBase, o.Client
	if l.client == nil {
		l.client = &fava.Client{}
	}
	l.adds = &group[*addRequest, *Response]{
		lock:     func(ctx context.Context) (func(), error) { return l.lockExclusive(ctx) },
		exec:     l.execAdds,
		maxItems: batchMaxItems(all.Batch),
		solo:     func(ar *addRequest) bool { return ar.req.Precondition.Set() || ar.req.Require != nil },
		maxBytes: all.Batch.MaxBytes,
		gather:   batchGather(all.Batch),
	}
	l.handlers = l.newHandlers()
	if err := l.recoverAtOpen(ctx); err != nil {
		l.journal.Close()
		return nil, fmt.Errorf("open ledger %s: %w", cfg.File, err)
	}
	l.rejectedAtOpen = l.rejectedLines()
	return l, nil
}

// openState opens what a ledger keeps on disk: its index (read once) and
// its journal, with its lock and rollback directory; what talks to Fava is
// left to Open.
func openState(all config.Config, cfg config.Ledger, o Options) (*Ledger, error) {
	l := &Ledger{
		slug:         o.Slug,
		cfg:          cfg,
		all:          all,
		log:          o.Logger,
		metrics:      o.Metrics,
		lock:         o.Locker,
		versions:     merge.NewVersions(all.Merge.CacheBytes),
		index:        beancount.NewIndex(cfg.File, beancount.IndexOptions{MetaKey: all.Idempotency.MetaKey}),
		retry:        retrier{cfg: all.Retry, clock: o.RetryClock, sleep: o.RetrySleep},
		inflightKeys: map[string]bool{},
		rb:           &rollbacks{dir: rollbackDir(cfg.StatePath(), cfg.File), sync: o.Sync},
	}
	if l.rb.sync == nil {
		l.rb.sync = syncFile
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.metrics == nil {
		l.metrics = nopMetrics{}
	}
	if l.lock == nil {
		l.lock = NewRWLock()
	}
	if err := l.index.Refresh(); err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", cfg.File, err)
	}
	j, err := journal.Open(cfg.StatePath(), cfg.File)
	if err != nil {
		return nil, fmt.Errorf("open ledger %s: %w", cfg.File, err)
	}
	l.journal = j
	return l, nil
}

// recoverAtOpen settles a write a crash interrupted, holding the ledger
// lock, before the ledger serves.
func (l *Ledger) recoverAtOpen(ctx context.Context) error {
	if m, err := l.rb.hot(); err != nil || m == nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, l.all.LockTimeout)
	defer cancel()
	release, err := l.lock.Lock(lctx)
	if err != nil {
		return fmt.Errorf("lock to recover: %w", err)
	}
	defer release()
	_, err = l.recoverHot(ctx)
	var still *errStillRunning
	if errors.As(err, &still) {
		// The writer that finds it after its deadline settles it.
		l.log.Warn("an interrupted write may still be running at fava; writes wait for it", "ledger", l.slug, "until", still.until)
		return nil
	}
	return err
}

// Close refuses new writes, waits (while ctx lasts) for the writes in
// progress to be answered, and closes the journal.
func (l *Ledger) Close(ctx context.Context) error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()
	done := make(chan struct{})
	go func() { l.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("close ledger %s: %w", l.slug, ctx.Err())
	}
	return l.journal.Close()
}

// Waiting returns how many writes wait for the user or ledger lock.
func (l *Ledger) Waiting() int { return int(l.waiting.Load()) }

// Users returns how many users hold or wait for their user lock.
func (l *Ledger) Users() int { return l.users.len() }

// QueuedAdds returns how many add_entries requests wait in the group commit
// for a leader to take them.
func (l *Ledger) QueuedAdds() int { return l.adds.Len() }

// Remembers reports whether the text is among the versions of the ledger's
// files that favaproxy remembers for merges.
func (l *Ledger) Remembers(text string) bool {
	got, ok := l.versions.Get(checksum.String(text))
	return ok && got == text
}

// Slug returns the ledger's URL slug.
func (l *Ledger) Slug() string { return l.slug }

// File returns the ledger's main file.
func (l *Ledger) File() string { return l.cfg.File }

// Request is one write to a ledger, as Write takes it: the client's
// request, buffered and stripped of what Fava must not see, plus who sent
// it and where it goes.
type Request struct {
	Kind favaproxy.Kind
	User favaproxy.User
	// Method is the client's method, upper-cased.
	Method string
	// URL is the absolute URL at Fava: prefix + cleaned path, and query.
	URL *url.URL
	// Host is the Host header to send (the client's).
	Host string
	// Header is the header to send: hop-by-hop headers, identity and
	// idempotency key headers already dealt with.
	Header http.Header
	// Body is the client's whole body.
	Body []byte
	// IdempotencyKey is the raw value of the idempotency header, "" for
	// none. It is never forwarded.
	IdempotencyKey string
	RequestID      string
	// Route is the client's method and path, for the audit trail.
	Route string
	// Precondition is what the write's If-Match / If-None-Match ask of
	// the ledger's version (version.go).
	Precondition Precondition
	// Require are the balance requirements of an add_entries write
	// (require.go), nil for none.
	Require []Requirement

	// Stats are filled in by Write, for the write's log line.
	Stats Stats

	// add is the prepared add_entries request, nil for other writes.
	add *addRequest
	// waitStart is when the write began to wait for its locks.
	waitStart time.Time
	// dequeue takes the write out of its ledger's queue count, once.
	dequeue func()
	// audit holds the checksums of the ledger's files for the write's
	// journal record; nil until the ledger lock is taken.
	audit *auditState
}

// Stats is what happened to a write, for its log line.
type Stats struct {
	// Queued is set once the write passed its checks and began to wait
	// for its locks.
	Queued bool
	// LockWait is how long it waited for the user and ledger locks.
	LockWait time.Duration
	// Upstream is the time spent in calls to Fava.
	Upstream time.Duration
	// Batch is the number of client writes in the call to Fava that
	// carried this one: 1 for a write forwarded alone, 0 for one never
	// forwarded.
	Batch int
}

// Response is an answer to a write, sent to the client as it is.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// Refused names the condition of a conditional write that did not
	// hold under the ledger lock ("precondition_failed" for If-Match,
	// "requirement_failed" for a balance requirement), "" otherwise.
	Refused string
}

// A handler carries out one kind of write. It is called with the user's
// lock held and takes the ledger lock itself (through l.underLock or
// l.withRetries), because group commit and conflict retries need to
// control when that happens. ctx ends when the lock wait is over
// (lock_timeout) or the client leaves; work done under the ledger lock must
// not depend on it.
type handler func(ctx context.Context, req *Request) (*Response, error)

// newHandlers returns the handler of each kind of write: the one place to
// add a route of Fava's. add_entries (group commit, idempotency), source
// and source_slice (conflict resolution) and add_account have handlers of
// their own, in their own files; documents, imports and any other write are
// forwarded as they are.
func (l *Ledger) newHandlers() map[favaproxy.Kind]handler {
	fwd := l.underLock(l.forward)
	return map[favaproxy.Kind]handler{
		favaproxy.KindAddEntries: l.addEntries,
		favaproxy.KindAddAccount: l.addAccount,
		favaproxy.KindSource:     l.putSource,
		favaproxy.KindSlice:      l.editSlice,
		favaproxy.KindDocument:   fwd,
		favaproxy.KindImport:     fwd,
		favaproxy.KindWrite:      fwd,
	}
}

// Write carries out one write: its paths and body are checked first (400
// otherwise), then it waits its turn — the user's lock, then the ledger's
// lock, never the reverse — and its kind's handler runs it; the answer is
// recorded in the journal before Write returns.
func (l *Ledger) Write(ctx context.Context, req *Request) (*Response, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, favaproxy.Errorf(favaproxy.EUnavailable, "favaproxy is shutting down")
	}
	l.inflight.Add(1)
	l.mu.Unlock()
	defer l.inflight.Done()

	if err := checkBody(req); err != nil {
		return nil, err
	}
	if err := l.checkWrite(req); err != nil {
		return nil, err
	}
	done, err := l.prepareAdd(req)
	if err != nil {
		return nil, err
	}
	defer done()
	resp, err := l.run(ctx, req)
	if a := req.audit; resp != nil && resp.Status < 300 && a != nil && a.after != nil && a.after.err == nil {
		// The version the write left, read under the lock.
		resp.Header.Set("ETag", a.after.version())
	}
	return resp, err
}

// checkBody refuses a JSON body nested deeper than fava.MaxDepth, before
// anything parses it (Fava's parser, and favaproxy's, go one level deeper
// per level of nesting).
func checkBody(req *Request) error {
	mt, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	b := bytes.TrimLeft(req.Body, " \t\r\n")
	isJSON := mt == "application/json" || strings.HasSuffix(mt, "+json") ||
		mt == "" && len(b) > 0 && (b[0] == '{' || b[0] == '[')
	if !isJSON {
		return nil
	}
	if err := fava.CheckDepth(req.Body, fava.MaxDepth); err != nil {
		return favaproxy.FieldErrorf("body", "%v (at most %d levels of arrays and objects)", err, fava.MaxDepth)
	}
	return nil
}

// run waits for the write's turn and runs its kind's handler. Lock order:
// the user's lock, then the ledger's lock (taken by the handler), never the
// reverse; both waits together are bounded by lock_timeout.
func (l *Ledger) run(ctx context.Context, req *Request) (*Response, error) {
	if n := l.waiting.Add(1); n > int64(l.all.Limits.QueueDepth) {
		l.waiting.Add(-1)
		return nil, favaproxy.Rejected(favaproxy.ReasonQueueFull, favaproxy.WithRetryAfter(favaproxy.Errorf(favaproxy.EUnavailable,
			"too many writes waiting for this ledger; retry later"), retryAfterQueueFull))
	}
	req.Stats.Queued = true
	l.metrics.QueueDepth(l.slug, 1)
	req.dequeue = sync.OnceFunc(func() { l.waiting.Add(-1); l.metrics.QueueDepth(l.slug, -1) })
	defer req.dequeue()
	req.waitStart = time.Now()

	lctx, cancel := context.WithTimeout(ctx, l.all.LockTimeout)
	defer cancel()
	// 1. The user's lock.
	releaseUser, err := l.users.lock(lctx, req.User)
	if err != nil {
		req.Stats.LockWait = time.Since(req.waitStart)
		return nil, lockErr(lctx, "user lock", err)
	}
	defer releaseUser()
	// 2. The ledger's lock, inside the handler.
	h := l.handlers[req.Kind]
	if h == nil {
		h = l.handlers[favaproxy.KindWrite]
	}
	return h(lctx, req)
}

// lockExclusive takes the ledger's exclusive lock, timing the wait and the
// hold. The caller must hold the user's lock of the write it takes it for.
func (l *Ledger) lockExclusive(ctx context.Context) (release func(), err error) {
	t0 := time.Now()
	release, err = l.lock.Lock(ctx)
	l.metrics.LockWait(l.slug, ModeExclusive, time.Since(t0))
	if err != nil {
		return nil, lockErr(ctx, "ledger lock", err)
	}
	release = l.timeHold(ModeExclusive, release)
	// A write interrupted by a crash (of this or another process) or left
	// unanswered by Fava is settled before anything else is written.
	if _, err := os.Stat(l.rb.manifestPath()); err == nil {
		if _, err := l.recoverHot(context.WithoutCancel(ctx)); err != nil {
			release()
			var still *errStillRunning
			if errors.As(err, &still) {
				return nil, favaproxy.WithRetryAfter(fmt.Errorf("%w: %w", favaproxy.Errorf(favaproxy.EUnavailable,
					"an earlier write that fava did not answer may still be running; retry later"), err),
					max(1, int(math.Ceil(time.Until(still.until).Seconds()))))
			}
			l.log.Error("settle an interrupted write", "ledger", l.slug, "err", err.Error())
			return nil, favaproxy.WithRetryAfter(fmt.Errorf("%w: %w", favaproxy.Errorf(favaproxy.EUnavailable,
				"the ledger is being recovered from an interrupted write; retry later"), err), retryAfterLockTimeout)
		}
	}
	return release, nil
}

// lockFor takes the ledger's exclusive lock for req (see lockExclusive)
// and starts its audit record.
func (l *Ledger) lockFor(ctx context.Context, req *Request) (release func(), err error) {
	release, err = l.lockExclusive(ctx)
	req.Stats.LockWait = time.Since(req.waitStart)
	if err != nil {
		return nil, err
	}
	if req.dequeue != nil {
		req.dequeue()
	}
	return l.auditLocked(req, release), nil
}

// RLock takes the ledger's shared lock for a read, waiting at most
// lock_timeout.
func (l *Ledger) RLock(ctx context.Context) (release func(), err error) {
	if tl, ok := l.lock.(TryRLocker); ok {
		if release, ok := tl.TryRLock(); ok {
			l.metrics.LockWait(l.slug, ModeShared, 0)
			return l.timeHold(ModeShared, release), nil
		}
	}
	lctx, cancel := context.WithTimeout(ctx, l.all.LockTimeout)
	defer cancel()
	t0 := time.Now()
	release, err = l.lock.RLock(lctx)
	l.metrics.LockWait(l.slug, ModeShared, time.Since(t0))
	if err != nil {
		return nil, lockErr(lctx, "shared ledger lock", err)
	}
	return l.timeHold(ModeShared, release), nil
}

// timeHold returns release wrapped so that it runs once and observes how
// long the lock was held; later calls do nothing.
func (l *Ledger) timeHold(mode string, release func()) func() {
	h := &hold{l: l, mode: mode, release: release, start: time.Now()}
	return h.end
}

// hold is a lock held, for timeHold: one allocation per read rather than
// sync.OnceFunc's several.
type hold struct {
	l       *Ledger
	mode    string
	release func()
	start   time.Time
	once    sync.Once
}

// end releases the lock the first time it is called; a call while another
// runs returns once that one has released it, as with sync.OnceFunc.
func (h *hold) end() { h.once.Do(h.doEnd) }

func (h *hold) doEnd() {
	h.release()
	h.l.metrics.LockHold(h.l.slug, h.mode, time.Since(h.start))
}

// lost reports whether the ledger lock this process holds has been lost
// (a lease that expired): from then on nothing may be sent to Fava or
// written. Locks that cannot be lost never report it.
func (l *Ledger) lost() bool {
	lr, ok := l.lock.(LossReporter)
	if !ok {
		return false
	}
	select {
	case <-lr.Lost():
		return true
	default:
		return false
	}
}

// verifyHold reports, as errLockLost, a ledger lock this process no longer
// holds: a lost lease, or a Verifier that cannot confirm the hold. It is
// called immediately before every request to Fava and every file put back.
func (l *Ledger) verifyHold(ctx context.Context) error {
	if l.lost() {
		return errLockLost()
	}
	v, ok := l.lock.(Verifier)
	if !ok {
		return nil
	}
	vctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.all.Timeouts.Dial)
	defer cancel()
	if err := v.Verify(vctx); err != nil {
		l.log.Error("the ledger lock is no longer held; nothing more is written under it", "ledger", l.slug, "err", err.Error())
		return fmt.Errorf("%w: %w", errLockLost(), err)
	}
	return nil
}

// fenceToken is the fencing token of the exclusive hold this process has,
// 0 for a lock without tokens.
func (l *Ledger) fenceToken() int64 {
	if f, ok := l.lock.(Fencer); ok {
		return f.Token()
	}
	return 0
}

// errLockLost is the answer to a write whose lock was lost before it was
// sent to Fava.
func errLockLost() error {
	return favaproxy.WithRetryAfter(fmt.Errorf("%w: %w", errLost,
		favaproxy.Errorf(favaproxy.EUnavailable, "the ledger lock was lost; nothing was written; retry later")), retryAfterLockLost)
}

// errLost marks the errors of errLockLost.
var errLost = errors.New("ledger lock lost")

// underLock returns a handler that runs fn holding the ledger lock. Once
// the lock is taken the write is carried through even if the client
// leaves: fn runs under a context that is not canceled with the request,
// bounded by timeouts.upstream.
func (l *Ledger) underLock(fn handler) handler {
	return func(ctx context.Context, req *Request) (*Response, error) {
		release, err := l.lockFor(ctx, req)
		if err != nil {
			return nil, err
		}
		defer release()
		resp, err := l.checkPrecondition(req), error(nil)
		if resp == nil {
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.all.Timeouts.Upstream)
			resp, err = fn(fctx, req)
			cancel()
		}
		l.auditWrite(req, resp, err) // under the lock: one journal writer at a time
		return resp, err
	}
}

// forward sends req to Fava as it is and returns Fava's answer. Any of
// the ledger's files may change (extensions, documents), so all of them
// are saved first.
func (l *Ledger) forward(ctx context.Context, req *Request) (*Response, error) {
	files, err := l.files(false)
	if err != nil {
		return nil, err
	}
	resp, _, err := l.sendWrite(ctx, req, files, nil, req.Method, req.URL, req.Body)
	if err != nil {
		return nil, err
	}
	return toResponse(resp), nil
}

// sendWrite sends a write to Fava under a rollback of files (rollback.go):
// their pre-images are saved first, and after Fava's answer the write is
// settled — kept (verified, fsynced), or rolled back. want is what the
// files hold when the write is complete, where known (nil: not known).
// When the write was rolled back after Fava gave no answer, the error says
// that nothing was written.
func (l *Ledger) sendWrite(ctx context.Context, req *Request, files []string, want *expectation, method string, u *url.URL, body []byte) (*fava.Response, settled, error) {
	m := &manifest{Kind: string(req.Kind)}
	var sums map[string]string
	if want != nil {
		sums, m.SliceOld, m.SliceNew = want.sums, want.sliceOld, want.sliceNew
	}
	g, err := l.begin(m, []*Request{req}, files, sums)
	if err != nil {
		return nil, nothing, err
	}
	resp, err := l.send(ctx, req, method, u, body)
	st, serr := g.settle(ctx, resp, err)
	if st == written {
		g.commit()
	}
	switch {
	case serr != nil:
		return nil, st, serr
	case err != nil && st == nothing && isCallError(err) && !fava.IsDialError(err):
		return nil, st, nothingWritten(err)
	}
	return resp, st, err
}

// expectation is what the files hold once a write is complete, where it is
// known: the checksum of a file (PUT source), or a slice edit's old slice
// gone and its new slice found once.
type expectation struct {
	sums               map[string]string
	sliceOld, sliceNew string
}

// isCallError reports whether err is a failed call to Fava (not a refusal
// before anything was sent).
func isCallError(err error) bool {
	c := favaproxy.ErrorCode(err)
	return c == favaproxy.EUpstream || c == favaproxy.ETimeout
}

// nothingWritten is the answer to a write Fava did not answer, whose files
// favaproxy then found unchanged or put back: the failure's code (502, 504)
// with a message that says so.
func nothingWritten(err error) error {
	code := favaproxy.ErrorCode(err)
	if code != favaproxy.ETimeout {
		code = favaproxy.EUpstream
	}
	return fmt.Errorf("%w: %w", favaproxy.Errorf(code, "fava did not answer the write; nothing was written"), err)
}

// send sends method u with body to Fava on behalf of req, with req's
// headers (identity, X-Forwarded-*, request ID) and a JSON content type
// when the body is favaproxy's own. It refuses to send once the ledger
// lock was lost. The answer's style is remembered.
func (l *Ledger) send(ctx context.Context, req *Request, method string, u *url.URL, body []byte) (*fava.Response, error) {
	if err := l.verifyHold(ctx); err != nil {
		return nil, err
	}
	h := req.Header.Clone()
	if method != req.Method || u != req.URL || string(body) != string(req.Body) {
		h.Del("Content-Type")
		if len(body) > 0 {
			h.Set("Content-Type", "application/json")
		}
	}
	t0 := time.Now()
	resp, err := l.client.Do(ctx, &fava.Request{Kind: req.Kind, Method: method, URL: u, Host: req.Host, Header: h, Body: body})
	req.Stats.Upstream += time.Since(t0)
	if method != http.MethodGet {
		// A write went to Fava (a read, like learnStyle's, is no batch).
		req.Stats.Batch = max(req.Stats.Batch, 1)
	}
	if err != nil {
		return nil, err
	}
	l.noteStyle(resp.Reply.Style)
	return resp, nil
}

// toResponse is Fava's answer as the client gets it.
func toResponse(r *fava.Response) *Response {
	h := r.Header.Clone()
	h.Del("Content-Length")
	return &Response{Status: r.Status, Header: h, Body: r.Body}
}

// apiURL returns the URL of Fava's API endpoint name of the ledger, with
// query q.
func (l *Ledger) apiURL(name string, q url.Values) *url.URL {
	u := *l.apiBase
	u.Path = path.Join(l.apiBase.Path, name)
	u.RawPath = ""
	u.RawQuery = q.Encode()
	return &u
}

// lockErr turns the error of a lock wait bounded by lctx into what the
// client is told: 503 with Retry-After when lock_timeout passed, ECanceled
// (logged as 499, never sent) when the client left, 503 for a lock that
// failed by itself.
func lockErr(lctx context.Context, what string, err error) error {
	switch {
	case errors.Is(lctx.Err(), context.DeadlineExceeded):
		return favaproxy.Rejected(favaproxy.ReasonLockTimeout, favaproxy.WithRetryAfter(fmt.Errorf("acquire %s: %w", what,
			favaproxy.Errorf(favaproxy.EUnavailable, "the ledger is busy; retry later")), retryAfterLockTimeout))
	case lctx.Err() != nil:
		return fmt.Errorf("acquire %s: %w", what,
			favaproxy.Errorf(favaproxy.ECanceled, "client closed the request while waiting"))
	default:
		return favaproxy.WithRetryAfter(fmt.Errorf("acquire %s: %w: %w", what,
			favaproxy.Errorf(favaproxy.EUnavailable, "the ledger lock is unavailable"), err), retryAfterLockTimeout)
	}
}

// CheckLock reports whether the ledger's lock can be taken at all: its
// lock file opens, or its lock server (etcd) answers. Locks that are not
// Checkers always pass.
func (l *Ledger) CheckLock() error {
	if c, ok := l.lock.(Checker); ok {
		if err := c.Check(); err != nil {
			return fmt.Errorf("ledger lock: %w", err)
		}
	}
	return nil
}

// Check reports whether the ledger can be written: its main file is
// readable and its journal's file is there and writable (CheckLock checks
// its lock). The error is for the log; it may name files.
func (l *Ledger) Check() error {
	f, err := os.Open(l.cfg.File)
	if err != nil {
		return fmt.Errorf("ledger file: %w", err)
	}
	f.Close()
	jf, err := os.OpenFile(l.journal.Path(), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	jf.Close()
	if l.unsettled.Load() {
		if err := l.settleForCheck(); err != nil {
			return err
		}
	}
	if err := l.index.Refresh(); err != nil {
		return fmt.Errorf("read ledger: %w", err)
	}
	if n := l.rejectedLines(); n > l.rejectedAtOpen {
		// A file torn by a crash, a full disk or a writer that bypassed
		// favaproxy: new writes would be appended to it.
		return fmt.Errorf("the ledger has %d lines Beancount would reject, %d when favaproxy started", n, l.rejectedAtOpen)
	}
	return nil
}

// rejectedLines counts the blocks of the ledger's files, as of the last
// refresh of the index, that start with a line Beancount would reject.
func (l *Ledger) rejectedLines() int {
	n := 0
	for _, f := range l.index.Ledger().Files {
		l.index.Any(f, func(b *beancount.Block) bool {
			if b.Kind == beancount.KindUnknown {
				n++
			}
			return false
		})
	}
	return n
}

// settleForCheck tries to settle a rollback left hot, for /readyz: a
// probe must not wait for a writer that an unready server never gets. A
// request that may still run at Fava is not a failure (writes wait for
// it, reads go on); a rollback that cannot be settled is.
func (l *Ledger) settleForCheck() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	release, err := l.lock.Lock(ctx)
	if err != nil {
		return nil // a writer holds the lock, and settles it first
	}
	defer release()
	_, err = l.recoverHot(ctx)
	var still *errStillRunning
	if err == nil || errors.As(err, &still) {
		return nil
	}
	return fmt.Errorf("an interrupted write could not be settled: %w", err)
}

// styleOf returns the last wire style seen from Fava (StyleUnknown,
// encoded as the newest style, before any).
func (l *Ledger) styleOf() fava.Style { return fava.Style(l.style.Load()) }

// noteStyle remembers st as the wire style of Fava, unless it is
// StyleUnknown.
func (l *Ledger) noteStyle(st fava.Style) {
	if st != fava.StyleUnknown {
		l.style.Store(int32(st))
	}
}
