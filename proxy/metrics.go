package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/ledger"
	"github.com/favaproxy/favaproxy/lock"
)

// Label values of favaproxy's metrics. A value outside its set is counted
// as metricOther so that a mistake cannot grow a series without bound.
const (
	metricOther = "other"

	// kind of requests_total, request_duration_seconds and
	// upstream_request_duration_seconds.
	metricKindRead   = "read"
	metricKindWrite  = "write"
	metricKindStatic = "static"

	// mode of the lock histograms.
	metricModeExclusive = ledger.ModeExclusive
	metricModeShared    = ledger.ModeShared

	// kind of conflicts_total.
	metricConflictFile      = ledger.ConflictFile
	metricConflictSlice     = ledger.ConflictSlice
	metricConflictEntryHash = ledger.ConflictEntryHash

	// resolution of conflicts_total.
	metricResolutionRelocated = ledger.ResolutionRelocated
	metricResolutionMerged    = ledger.ResolutionMerged
	metricResolutionRetried   = ledger.ResolutionRetried
	metricResolution409       = ledger.Resolution409

	// reason of upstream_errors_total.
	metricUpstreamDial      = "dial"
	metricUpstreamTimeout   = "timeout"
	metricUpstreamStatus5xx = "status_5xx"
	metricUpstreamBadReply  = "bad_reply"

	// reason of rejected_requests_total.
	metricRejectInvalid      = "invalid"
	metricRejectTooLarge     = "too_large"
	metricRejectUnauthorized = "unauthorized"
	metricRejectForbidden    = "forbidden"
	metricRejectQueueFull    = favaproxy.ReasonQueueFull
	metricRejectLockTimeout  = favaproxy.ReasonLockTimeout
	metricRejectBuffersFull  = favaproxy.ReasonBuffersFull
)

var (
	metricModes           = []string{metricModeExclusive, metricModeShared}
	metricConflictKinds   = []string{metricConflictFile, metricConflictSlice, metricConflictEntryHash}
	metricResolutions     = []string{metricResolutionRelocated, metricResolutionMerged, metricResolutionRetried, metricResolution409}
	metricUpstreamReasons = []string{metricUpstreamDial, metricUpstreamTimeout, metricUpstreamStatus5xx, metricUpstreamBadReply}
	metricRejectReasons   = []string{metricRejectInvalid, metricRejectTooLarge, metricRejectUnauthorized, metricRejectForbidden, metricRejectQueueFull, metricRejectLockTimeout, metricRejectBuffersFull}
	metricRollbackEvents  = []string{ledger.RollbackBegun, ledger.RollbackCommitted, ledger.RollbackRestored, ledger.RollbackRecovered}
)

// Histogram buckets, in seconds or requests.
var (
	// metricsDurationBuckets spans 1ms to 60s: a read served from Fava's
	// cache up to a write that waited out a long lock.
	metricsDurationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	// metricsBatchBuckets covers batch.max_requests (default 64) and more.
	metricsBatchBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}
)

// metrics are one Server's Prometheus collectors, on a registry of its own
// so that several servers can live in one process (as in tests). A nil
// *metrics is valid and records nothing: the server of a configuration with
// metrics.disabled keeps a nil one.
type metrics struct {
	registry *prometheus.Registry
	handler  http.Handler

	// The series every request moves, resolved once rather than looked up
	// by their label values per request: by kind (metricKindIndex), and
	// for requests_total by kind and status code, resolved on first use.
	requestDurationBy  [len(metricKindsIndexed)]prometheus.Observer
	upstreamDurationBy [len(metricKindsIndexed)]prometheus.Observer
	requestsBy         [len(metricKindsIndexed)][maxMetricCode]atomic.Pointer[prometheus.Counter]
	// ledgers holds each ledger's lock series by mode index (0 exclusive,
	// 1 shared); written by addLedger before the server serves.
	ledgers map[string]*ledgerSeries

	requests              *prometheus.CounterVec   // kind, code
	requestDuration       *prometheus.HistogramVec // kind
	lockWait              *prometheus.HistogramVec // ledger, mode
	lockHold              *prometheus.HistogramVec // ledger, mode
	queueDepth            *prometheus.GaugeVec     // ledger
	conflicts             *prometheus.CounterVec   // ledger, kind, resolution
	idempotentReplays     *prometheus.CounterVec   // ledger
	idempotencyMismatches *prometheus.CounterVec   // ledger
	batchSize             *prometheus.HistogramVec // ledger
	upstreamDuration      *prometheus.HistogramVec // kind
	upstreamErrors        *prometheus.CounterVec   // reason
	rejected              *prometheus.CounterVec   // reason
	rollbacks             *prometheus.CounterVec   // ledger, event
	fsync                 *prometheus.HistogramVec // ledger
	leaseLosses           *prometheus.CounterVec   // ledger
	fenced                *prometheus.CounterVec   // ledger
}

// ledgerSeries are the lock series of one ledger, by mode index.
type ledgerSeries struct {
	lockWait, lockHold [2]prometheus.Observer
}

// maxMetricCode bounds the status codes whose requests_total series are
// kept resolved; others are looked up per request.
const maxMetricCode = 600

// metricKindsIndexed are the kind labels by metricKindIndex.
var metricKindsIndexed = [...]string{metricKindRead, metricKindWrite, metricKindStatic, metricOther}

// newMetrics returns favaproxy's collectors registered on a new registry,
// together with the Go runtime and process collectors.
func newMetrics() *metrics {
	const ns = "favaproxy"
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "requests_total",
			Help: "Requests answered, by kind (read, write, static, other) and HTTP status code.",
		}, []string{"kind", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "request_duration_seconds",
			Help:    "Time from a request's arrival to its answer, lock wait included, by kind.",
			Buckets: metricsDurationBuckets,
		}, []string{"kind"}),
		lockWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "lock_wait_seconds",
			Help:    "Time spent waiting for a ledger's lock, by ledger and mode (exclusive, shared).",
			Buckets: metricsDurationBuckets,
		}, []string{"ledger", "mode"}),
		lockHold: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "lock_hold_seconds",
			Help:    "Time a ledger's lock was held, by ledger and mode (exclusive, shared).",
			Buckets: metricsDurationBuckets,
		}, []string{"ledger", "mode"}),
		queueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Name: "write_queue_depth",
			Help: "Writes waiting for a ledger's lock, by ledger.",
		}, []string{"ledger"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "conflicts_total",
			Help: "Conflicts with a change made behind favaproxy's back, by ledger, kind (file, slice, entry_hash) and resolution (relocated, merged, retried, answered_409).",
		}, []string{"ledger", "kind", "resolution"}),
		idempotentReplays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "idempotent_replays_total",
			Help: "Writes answered from the journal because their Idempotency-Key was already done, by ledger.",
		}, []string{"ledger"}),
		idempotencyMismatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "idempotency_mismatches_total",
			Help: "Writes refused because their Idempotency-Key was used before for a different request, by ledger.",
		}, []string{"ledger"}),
		batchSize: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "batch_size",
			Help:    "Client requests combined into one upstream add_entries call, by ledger.",
			Buckets: metricsBatchBuckets,
		}, []string{"ledger"}),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "upstream_request_duration_seconds",
			Help:    "Time Fava took to answer a forwarded request, up to its response headers, by kind.",
			Buckets: metricsDurationBuckets,
		}, []string{"kind"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "upstream_errors_total",
			Help: "Forwarded requests that failed, by reason (dial, timeout, status_5xx, bad_reply).",
		}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "rejected_requests_total",
			Help: "Requests refused before reaching Fava, by reason (invalid, too_large, unauthorized, forbidden, queue_full, lock_timeout, buffers_full).",
		}, []string{"reason"}),
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "rollbacks_total",
			Help: "Events of the rollback journal of crash-safe writes, by ledger and event (begun: pre-images taken; committed: a write kept; restored: files put back after a failed write; recovered: a write interrupted by a crash settled).",
		}, []string{"ledger", "event"}),
		fsync: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Name: "fsync_seconds",
			Help:    "Time spent saving pre-images, or making a write durable, by ledger.",
			Buckets: metricsDurationBuckets,
		}, []string{"ledger"}),
		leaseLosses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "lock_lease_losses_total",
			Help: "Holds of a ledger's lock on etcd that were lost while held (the lease ended: the holder was paused or cut off from etcd for longer than lock.etcd.ttl), by ledger.",
		}, []string{"ledger"}),
		fenced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Name: "lock_fencing_refusals_total",
			Help: "Writes refused because the ledger's fence file named a newer holder of its lock on etcd, by ledger.",
		}, []string{"ledger"}),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.requestDuration, m.lockWait, m.lockHold, m.queueDepth,
		m.conflicts, m.idempotentReplays, m.idempotencyMismatches, m.batchSize,
		m.upstreamDuration, m.upstreamErrors, m.rejected, m.rollbacks, m.fsync,
		m.leaseLosses, m.fenced,
	)
	// Series that do not depend on a ledger start at zero, so rate() and
	// alerts see them before the first event.
	for i, k := range metricKindsIndexed {
		m.requestDurationBy[i] = m.requestDuration.WithLabelValues(k)
		m.upstreamDurationBy[i] = m.upstreamDuration.WithLabelValues(k)
	}
	m.ledgers = map[string]*ledgerSeries{}
	for _, r := range metricUpstreamReasons {
		m.upstreamErrors.WithLabelValues(r)
	}
	for _, r := range metricRejectReasons {
		m.rejected.WithLabelValues(r)
	}
	m.handler = promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		Registry:      m.registry, // counts its own failures as promhttp_metric_handler_errors_total
		ErrorHandling: promhttp.ContinueOnError,
	})
	return m
}

// metricsHandler serves the metrics in Prometheus' text (or negotiated)
// format; the server mounts it at /metrics. A nil m serves 404.
func (m *metrics) metricsHandler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return m.handler
}

// addLedger creates a ledger's series at zero (queue depth, conflicts of
// every kind and resolution, replays, mismatches), so that they exist
// before the first event. Call it once per configured ledger slug.
func (m *metrics) addLedger(ledger string) {
	if m == nil {
		return
	}
	m.queueDepth.WithLabelValues(ledger)
	ls := &ledgerSeries{}
	for i, mode := range metricModes {
		ls.lockWait[i] = m.lockWait.WithLabelValues(ledger, mode)
		ls.lockHold[i] = m.lockHold.WithLabelValues(ledger, mode)
	}
	m.ledgers[ledger] = ls
	for _, k := range metricConflictKinds {
		for _, r := range metricResolutions {
			m.conflicts.WithLabelValues(ledger, k, r)
		}
	}
	m.idempotentReplays.WithLabelValues(ledger)
	m.idempotencyMismatches.WithLabelValues(ledger)
	for _, e := range metricRollbackEvents {
		m.rollbacks.WithLabelValues(ledger, e)
	}
	m.leaseLosses.WithLabelValues(ledger)
	m.fenced.WithLabelValues(ledger)
}

// lockHooks returns the hooks that count the events of a ledger's lock on
// etcd.
func (m *metrics) lockHooks(ledger string) lock.EtcdHooks {
	if m == nil {
		return lock.EtcdHooks{}
	}
	return lock.EtcdHooks{
		LeaseLost: m.leaseLosses.WithLabelValues(ledger).Inc,
		Fenced:    m.fenced.WithLabelValues(ledger).Inc,
	}
}

// Rollback counts an event of a ledger's rollback journal: "begun",
// "committed", "restored" or "recovered".
func (m *metrics) Rollback(ledger, event string) {
	if m == nil {
		return
	}
	m.rollbacks.WithLabelValues(ledger, metricOneOf(event, metricRollbackEvents)).Inc()
}

// Fsync observes the time spent saving pre-images or making a write
// durable.
func (m *metrics) Fsync(ledger string, d time.Duration) {
	if m == nil {
		return
	}
	m.fsync.WithLabelValues(ledger).Observe(d.Seconds())
}

// metricKindIndex maps a request's kind to the index in metricKindsIndexed
// of its kind label: read, static, write (every kind that changes a ledger)
// or other (no kind: favaproxy's own routes and requests refused before
// classification).
func metricKindIndex(k favaproxy.Kind) int {
	switch {
	case k == favaproxy.KindRead:
		return 0
	case k == favaproxy.KindStatic:
		return 2
	case k.IsWrite():
		return 1
	default:
		return 3
	}
}

// metricOneOf returns v if it is in set, else metricOther.
func metricOneOf(v string, set []string) string {
	for _, s := range set {
		if v == s {
			return v
		}
	}
	return metricOther
}

// request counts one answered request and observes its duration.
func (m *metrics) request(kind favaproxy.Kind, code int, d time.Duration) {
	if m == nil {
		return
	}
	k := metricKindIndex(kind)
	m.requestCounter(k, code).Inc()
	m.requestDurationBy[k].Observe(d.Seconds())
}

// requestCounter returns the requests_total series of kind index k and
// code, resolving it once per pair.
func (m *metrics) requestCounter(k, code int) prometheus.Counter {
	if code < 0 || code >= maxMetricCode {
		return m.requests.WithLabelValues(metricKindsIndexed[k], strconv.Itoa(code))
	}
	slot := &m.requestsBy[k][code]
	if c := slot.Load(); c != nil {
		return *c
	}
	c := m.requests.WithLabelValues(metricKindsIndexed[k], strconv.Itoa(code))
	slot.Store(&c)
	return c
}

// lockSeries returns the lock series of ledger and mode from vec's
// resolved ones (pick chooses lockWait or lockHold), looking them up for a
// ledger addLedger did not add.
func (m *metrics) lockSeries(vec *prometheus.HistogramVec, pick func(*ledgerSeries) *[2]prometheus.Observer, ledger, mode string) prometheus.Observer {
	if ls := m.ledgers[ledger]; ls != nil {
		switch mode {
		case metricModeExclusive:
			return pick(ls)[0]
		case metricModeShared:
			return pick(ls)[1]
		}
	}
	return vec.WithLabelValues(ledger, metricOneOf(mode, metricModes))
}

func lockWaitSeries(ls *ledgerSeries) *[2]prometheus.Observer { return &ls.lockWait }
func lockHoldSeries(ls *ledgerSeries) *[2]prometheus.Observer { return &ls.lockHold }

// LockWait observes the wait for a ledger's lock; mode is
// "exclusive" or "shared".
func (m *metrics) LockWait(ledger, mode string, d time.Duration) {
	if m == nil {
		return
	}
	m.lockSeries(m.lockWait, lockWaitSeries, ledger, mode).Observe(d.Seconds())
}

// LockHold observes how long a ledger's lock was held; mode is
// "exclusive" or "shared".
func (m *metrics) LockHold(ledger, mode string, d time.Duration) {
	if m == nil {
		return
	}
	m.lockSeries(m.lockHold, lockHoldSeries, ledger, mode).Observe(d.Seconds())
}

// QueueDepth moves the number of writes waiting for a ledger's lock by
// delta: +1 when a write starts waiting, -1 when it stops.
func (m *metrics) QueueDepth(ledger string, delta int) {
	if m == nil {
		return
	}
	m.queueDepth.WithLabelValues(ledger).Add(float64(delta))
}

// Conflict counts a conflict on a ledger: kind is "file", "slice" or
// "entry_hash"; resolution is "relocated", "merged", "retried" or
// "answered_409".
func (m *metrics) Conflict(ledger, kind, resolution string) {
	if m == nil {
		return
	}
	m.conflicts.WithLabelValues(ledger, metricOneOf(kind, metricConflictKinds), metricOneOf(resolution, metricResolutions)).Inc()
}

// IdempotentReplay counts a write answered from the journal.
func (m *metrics) IdempotentReplay(ledger string) {
	if m == nil {
		return
	}
	m.idempotentReplays.WithLabelValues(ledger).Inc()
}

// IdempotencyMismatch counts a key reused for a different request (422).
func (m *metrics) IdempotencyMismatch(ledger string) {
	if m == nil {
		return
	}
	m.idempotencyMismatches.WithLabelValues(ledger).Inc()
}

// Batch observes the number of client requests in one upstream
// add_entries call.
func (m *metrics) Batch(ledger string, requests int) {
	if m == nil {
		return
	}
	m.batchSize.WithLabelValues(ledger).Observe(float64(requests))
}

// Upstream observes how long Fava took to answer a forwarded request.
func (m *metrics) Upstream(kind favaproxy.Kind, d time.Duration) {
	if m == nil {
		return
	}
	m.upstreamDurationBy[metricKindIndex(kind)].Observe(d.Seconds())
}

// UpstreamError counts a failed forward: reason is "dial", "timeout",
// "status_5xx" or "bad_reply".
func (m *metrics) UpstreamError(reason string) {
	if m == nil {
		return
	}
	m.upstreamErrors.WithLabelValues(metricOneOf(reason, metricUpstreamReasons)).Inc()
}

// reject counts a request refused before it reached Fava: reason is
// "invalid", "too_large", "unauthorized", "forbidden", "queue_full" or
// "lock_timeout".
func (m *metrics) reject(reason string) {
	if m == nil {
		return
	}
	m.rejected.WithLabelValues(metricOneOf(reason, metricRejectReasons)).Inc()
}

// countUpstreamRestarts exports favaproxy_upstream_restarts_total, read from
// restarts at each scrape (in run mode, the supervisor's Restarts). It
// fails if called twice.
func (m *metrics) countUpstreamRestarts(restarts func() int) error {
	if m == nil {
		return nil
	}
	if restarts == nil {
		return errors.New("count upstream restarts: nil func")
	}
	c := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "favaproxy", Name: "upstream_restarts_total",
		Help: "Times the Fava child process exited and was started again (run mode only).",
	}, func() float64 { return float64(restarts()) })
	if err := m.registry.Register(c); err != nil {
		return fmt.Errorf("count upstream restarts: %w", err)
	}
	return nil
}
