package ledger

import (
	"context"
	"net/http"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/fava"
)

// retrier is the backoff policy of writes that favaproxy retries: only
// connection failures before a request reached Fava, and conflicts it
// resolves by re-deriving the change (the file changed between favaproxy's
// read and its write because an outside writer, which does not take the
// ledger lock, wrote). Nothing else is retried.
//
// Waits are exponential with jitter (backoff's randomization factor 0.5),
// bounded by cfg.MaxAttempts attempts and cfg.MaxElapsed in total, which
// config.Validate keeps below lock_timeout. Every request gets its own
// backoff object, and no wait happens with the ledger lock held.
type retrier struct {
	cfg config.Retry
	// clock is the backoff's clock. Nil means the system clock.
	clock backoff.Clock
	// sleep waits d or until ctx ends. Nil means a timer; tests replace
	// it so that they never sleep.
	sleep func(ctx context.Context, d time.Duration) error
}

// newBackOff returns a fresh backoff for one request. It stops after
// MaxAttempts-1 waits or once MaxElapsed would pass.
func (r *retrier) newBackOff() backoff.BackOff {
	clock := r.clock
	if clock == nil {
		clock = backoff.SystemClock
	}
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(r.cfg.InitialInterval),
		backoff.WithMaxElapsedTime(r.cfg.MaxElapsed),
		backoff.WithMaxInterval(max(r.cfg.MaxElapsed, r.cfg.InitialInterval)),
		backoff.WithClockProvider(clock),
	)
	return backoff.WithMaxRetries(b, uint64(max(r.cfg.MaxAttempts-1, 0)))
}

// wait sleeps d, or less when ctx ends first (then it returns ctx's error).
func (r *retrier) wait(ctx context.Context, d time.Duration) error {
	if r.sleep != nil {
		return r.sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// attemptResult is what one attempt under the ledger lock decided.
type attemptResult struct {
	resp *Response
	// reply is Fava's classified answer when resp is Fava's, or the
	// outcome of the answer favaproxy made itself.
	reply fava.Reply
	err   error
	// retry asks for another attempt after a backoff wait; resp or err
	// is the answer when no attempt is left.
	retry bool
	// conflict is the kind of conflict the attempt met (a Conflict*
	// value), "" for none, and resolved how favaproxy resolved it
	// (ResolutionMerged or ResolutionRelocated). withRetries counts it:
	// resolved, retried, or answered 409.
	conflict, resolved string
}

// lockedAttempt is one attempt of a write, run holding the ledger lock with
// a context that the client leaving does not cancel.
type lockedAttempt func(ctx context.Context, req *Request) attemptResult

// withRetries runs attempt under the ledger lock until it asks for no retry
// or the request's backoff stops. Between attempts it releases the lock,
// waits (bounded by ctx, the lock wait's context), re-acquires the lock
// and runs attempt again, which re-reads and re-checks everything. It is
// the one place that decides whether a write is tried again.
func (l *Ledger) withRetries(ctx context.Context, req *Request, attempt lockedAttempt) (*Response, error) {
	b := l.retry.newBackOff()
	for {
		release, err := l.lockFor(ctx, req)
		if err != nil {
			return nil, err
		}
		if resp := l.checkPrecondition(req); resp != nil {
			l.auditWrite(req, resp, nil)
			release()
			return resp, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.all.Timeouts.Upstream)
		if l.styleOf() == fava.StyleUnknown {
			// Answers favaproxy may write itself must be in Fava's style.
			l.learnStyle(fctx, req)
		}
		res := attempt(fctx, req)
		cancel()
		d := backoff.Stop
		if res.retry {
			d = b.NextBackOff()
		}
		if d == backoff.Stop {
			// The final answer: recorded under the lock (one journal
			// writer at a time, whatever the lock spans).
			resp, err := l.countConflict(res)
			l.auditWrite(req, resp, err)
			release()
			return resp, err
		}
		release()
		if err := l.retry.wait(ctx, d); err != nil {
			// The lock wait is over (or the client left): the last
			// answer stands, recorded under the lock taken once more.
			resp, err := l.countConflict(res)
			l.auditRelocked(req, resp, err)
			return resp, err
		}
		if res.conflict != "" {
			l.metrics.Conflict(l.slug, res.conflict, ResolutionRetried)
		}
	}
}

// auditRelocked records req's answer after its lock was released: it takes
// the ledger lock again for the append, waiting at most lock_timeout, and
// appends without it (logged) when it cannot.
func (l *Ledger) auditRelocked(req *Request, resp *Response, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), l.all.LockTimeout)
	defer cancel()
	release, lerr := l.lockExclusive(ctx)
	if lerr != nil {
		l.log.Warn("journal record appended without the ledger lock", "ledger", l.slug,
			"request_id", req.RequestID, "err", lerr.Error())
		l.auditWrite(req, resp, err)
		return
	}
	l.auditWrite(req, resp, err)
	release()
}

// countConflict counts the conflict of the final attempt res, if any, by
// how it ended, and returns its answer.
func (l *Ledger) countConflict(res attemptResult) (*Response, error) {
	switch {
	case res.conflict == "":
	case res.resolved != "":
		l.metrics.Conflict(l.slug, res.conflict, res.resolved)
	case res.resp != nil && res.resp.Status == http.StatusConflict:
		l.metrics.Conflict(l.slug, res.conflict, Resolution409)
	}
	return res.resp, res.err
}
