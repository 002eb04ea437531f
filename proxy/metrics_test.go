package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/favaproxy/favaproxy"
)

// metricsNames are the names of favaproxy's own metrics, as the README's
// monitoring section lists them.
var metricsNames = []string{
	"favaproxy_requests_total",
	"favaproxy_request_duration_seconds",
	"favaproxy_lock_wait_seconds",
	"favaproxy_lock_hold_seconds",
	"favaproxy_write_queue_depth",
	"favaproxy_conflicts_total",
	"favaproxy_idempotent_replays_total",
	"favaproxy_idempotency_mismatches_total",
	"favaproxy_batch_size",
	"favaproxy_upstream_request_duration_seconds",
	"favaproxy_upstream_errors_total",
	"favaproxy_rejected_requests_total",
	"favaproxy_upstream_restarts_total",
}

// metricsExercise moves every series of m at least once.
func metricsExercise(tb testing.TB, m *metrics) {
	tb.Helper()
	m.addLedger("main")
	m.request(favaproxy.KindAddEntries, 200, 30*time.Millisecond)
	m.LockWait("main", metricModeExclusive, 2*time.Millisecond)
	m.LockHold("main", metricModeExclusive, 20*time.Millisecond)
	m.QueueDepth("main", 3)
	m.Conflict("main", metricConflictFile, metricResolutionMerged)
	m.IdempotentReplay("main")
	m.IdempotencyMismatch("main")
	m.Batch("main", 5)
	m.Upstream(favaproxy.KindAddEntries, 15*time.Millisecond)
	m.UpstreamError(metricUpstreamDial)
	m.reject(metricRejectInvalid)
	if err := m.countUpstreamRestarts(func() int { return 2 }); err != nil {
		tb.Fatal(err)
	}
}

func TestMetricsRegistered(t *testing.T) {
	m := newMetrics()
	metricsExercise(t, m)
	for _, name := range metricsNames {
		n, err := testutil.GatherAndCount(m.registry, name)
		if err != nil {
			t.Fatalf("gather %s: %v", name, err)
		}
		if n == 0 {
			t.Errorf("%s: no series", name)
		}
	}
	// The Go runtime and process collectors are there too.
	for _, name := range []string{"go_goroutines", "process_start_time_seconds"} {
		if n, err := testutil.GatherAndCount(m.registry, name); err != nil || n == 0 {
			t.Errorf("%s: n=%d err=%v", name, n, err)
		}
	}
}

func TestMetricsLint(t *testing.T) {
	m := newMetrics()
	metricsExercise(t, m)
	problems, err := testutil.GatherAndLint(m.registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestMetricsSeriesAtZero(t *testing.T) {
	m := newMetrics()
	m.addLedger("main")
	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want int
	}{
		{"ConflictsEveryKindAndResolution", m.conflicts, len(metricConflictKinds) * len(metricResolutions)},
		{"Replays", m.idempotentReplays, 1},
		{"Mismatches", m.idempotencyMismatches, 1},
		{"QueueDepth", m.queueDepth, 1},
		{"UpstreamErrorsEveryReason", m.upstreamErrors, len(metricUpstreamReasons)},
		{"RejectedEveryReason", m.rejected, len(metricRejectReasons)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := testutil.CollectAndCount(tc.c); got != tc.want {
				t.Fatalf("series=%d, want %d", got, tc.want)
			}
		})
	}
	if got := testutil.ToFloat64(m.conflicts.WithLabelValues("main", metricConflictEntryHash, metricResolution409)); got != 0 {
		t.Fatalf("conflict series=%v before any conflict, want 0", got)
	}
}

// metricsHistogramCount returns how many observations a histogram series
// holds.
func metricsHistogramCount(tb testing.TB, o prometheus.Observer) uint64 {
	tb.Helper()
	c, ok := o.(prometheus.Metric)
	if !ok {
		tb.Fatalf("%T is not a Metric", o)
	}
	return metricsDTO(tb, c).GetHistogram().GetSampleCount()
}

// metricsDTO returns the current value of one series.
func metricsDTO(tb testing.TB, c prometheus.Metric) *dto.Metric {
	tb.Helper()
	var pb dto.Metric
	if err := c.Write(&pb); err != nil {
		tb.Fatal(err)
	}
	return &pb
}

// metricsGathered gathers g and returns the value of the single series of
// the counter or gauge called name.
func metricsGathered(tb testing.TB, g prometheus.Gatherer, name string) float64 {
	tb.Helper()
	mfs, err := g.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		if len(mf.GetMetric()) != 1 {
			tb.Fatalf("%s: %d series, want 1", name, len(mf.GetMetric()))
		}
		pb := mf.GetMetric()[0]
		if pb.GetCounter() != nil {
			return pb.GetCounter().GetValue()
		}
		return pb.GetGauge().GetValue()
	}
	tb.Fatalf("%s not gathered", name)
	return 0
}

func TestMetricsMethods(t *testing.T) {
	m := newMetrics()
	m.addLedger("main")
	m.addLedger("other")

	t.Run("Request", func(t *testing.T) {
		m.request(favaproxy.KindAddEntries, 200, time.Millisecond)
		m.request(favaproxy.KindSource, 200, time.Millisecond)
		m.request(favaproxy.KindRead, 200, time.Millisecond)
		m.request(favaproxy.KindStatic, 304, time.Millisecond)
		m.request("", 404, time.Millisecond)
		m.request(favaproxy.KindSlice, 409, time.Millisecond)
		for _, tc := range []struct {
			kind, code string
			want       float64
		}{
			{"write", "200", 2}, {"read", "200", 1}, {"static", "304", 1}, {"other", "404", 1}, {"write", "409", 1}, {"read", "409", 0},
		} {
			if got := testutil.ToFloat64(m.requests.WithLabelValues(tc.kind, tc.code)); got != tc.want {
				t.Errorf("requests_total{kind=%s,code=%s}=%v, want %v", tc.kind, tc.code, got, tc.want)
			}
		}
		if got, want := metricsHistogramCount(t, m.requestDuration.WithLabelValues("write")), uint64(3); got != want {
			t.Errorf("request_duration_seconds{kind=write} count=%d, want %d", got, want)
		}
	})
	t.Run("LockWaitAndHold", func(t *testing.T) {
		m.LockWait("main", metricModeExclusive, 1500*time.Millisecond)
		m.LockWait("main", metricModeShared, time.Millisecond)
		m.LockHold("main", metricModeExclusive, time.Second)
		pb := metricsDTO(t, m.lockWait.WithLabelValues("main", "exclusive").(prometheus.Metric))
		if got, want := pb.GetHistogram().GetSampleSum(), 1.5; got != want {
			t.Errorf("lock_wait_seconds sum=%v, want %v (seconds)", got, want)
		}
		if got, want := metricsHistogramCount(t, m.lockWait.WithLabelValues("main", "shared")), uint64(1); got != want {
			t.Errorf("lock_wait_seconds{mode=shared} count=%d, want %d", got, want)
		}
		if got, want := metricsHistogramCount(t, m.lockHold.WithLabelValues("main", "exclusive")), uint64(1); got != want {
			t.Errorf("lock_hold_seconds count=%d, want %d", got, want)
		}
		if got := metricsHistogramCount(t, m.lockWait.WithLabelValues("other", "exclusive")); got != 0 {
			t.Errorf("other ledger's lock wait count=%d, want 0", got)
		}
	})
	t.Run("QueueDepth", func(t *testing.T) {
		m.QueueDepth("main", 4)
		m.QueueDepth("main", 1)
		m.QueueDepth("main", -2)
		if got, want := testutil.ToFloat64(m.queueDepth.WithLabelValues("main")), 3.0; got != want {
			t.Errorf("write_queue_depth=%v, want %v", got, want)
		}
		if got := testutil.ToFloat64(m.queueDepth.WithLabelValues("other")); got != 0 {
			t.Errorf("other ledger's queue=%v, want 0", got)
		}
	})
	t.Run("Conflicts", func(t *testing.T) {
		m.Conflict("main", metricConflictEntryHash, metricResolutionRelocated)
		m.Conflict("main", metricConflictEntryHash, metricResolutionRelocated)
		m.Conflict("main", metricConflictFile, metricResolution409)
		for _, tc := range []struct {
			kind, res string
			want      float64
		}{
			{"entry_hash", "relocated", 2}, {"file", "answered_409", 1}, {"file", "merged", 0}, {"slice", "retried", 0},
		} {
			if got := testutil.ToFloat64(m.conflicts.WithLabelValues("main", tc.kind, tc.res)); got != tc.want {
				t.Errorf("conflicts_total{kind=%s,resolution=%s}=%v, want %v", tc.kind, tc.res, got, tc.want)
			}
		}
	})
	t.Run("UnknownLabelValueCountedAsOther", func(t *testing.T) {
		before := testutil.CollectAndCount(m.conflicts)
		m.Conflict("main", "typo", "typo")
		m.Conflict("main", "typo2", "typo2")
		if got, want := testutil.CollectAndCount(m.conflicts), before+1; got != want {
			t.Errorf("conflict series=%d after two unknown values, want %d", got, want)
		}
		if got, want := testutil.ToFloat64(m.conflicts.WithLabelValues("main", "other", "other")), 2.0; got != want {
			t.Errorf("conflicts_total{kind=other,resolution=other}=%v, want %v", got, want)
		}
		m.reject("nonsense")
		if got, want := testutil.ToFloat64(m.rejected.WithLabelValues("other")), 1.0; got != want {
			t.Errorf("rejected_requests_total{reason=other}=%v, want %v", got, want)
		}
	})
	t.Run("Idempotency", func(t *testing.T) {
		m.IdempotentReplay("main")
		m.IdempotentReplay("main")
		m.IdempotencyMismatch("other")
		if got, want := testutil.ToFloat64(m.idempotentReplays.WithLabelValues("main")), 2.0; got != want {
			t.Errorf("idempotent_replays_total=%v, want %v", got, want)
		}
		if got, want := testutil.ToFloat64(m.idempotencyMismatches.WithLabelValues("other")), 1.0; got != want {
			t.Errorf("idempotency_mismatches_total{ledger=other}=%v, want %v", got, want)
		}
		if got := testutil.ToFloat64(m.idempotencyMismatches.WithLabelValues("main")); got != 0 {
			t.Errorf("idempotency_mismatches_total{ledger=main}=%v, want 0", got)
		}
	})
	t.Run("Batch", func(t *testing.T) {
		m.Batch("main", 7)
		m.Batch("main", 1)
		pb := metricsDTO(t, m.batchSize.WithLabelValues("main").(prometheus.Metric))
		if got, want := pb.GetHistogram().GetSampleCount(), uint64(2); got != want {
			t.Errorf("batch_size count=%d, want %d", got, want)
		}
		if got, want := pb.GetHistogram().GetSampleSum(), 8.0; got != want {
			t.Errorf("batch_size sum=%v, want %v", got, want)
		}
	})
	t.Run("Upstream", func(t *testing.T) {
		m.Upstream(favaproxy.KindRead, 5*time.Millisecond)
		m.UpstreamError(metricUpstreamTimeout)
		m.UpstreamError(metricUpstreamStatus5xx)
		m.UpstreamError(metricUpstreamStatus5xx)
		if got, want := metricsHistogramCount(t, m.upstreamDuration.WithLabelValues("read")), uint64(1); got != want {
			t.Errorf("upstream_request_duration_seconds{kind=read} count=%d, want %d", got, want)
		}
		if got, want := testutil.ToFloat64(m.upstreamErrors.WithLabelValues("status_5xx")), 2.0; got != want {
			t.Errorf("upstream_errors_total{reason=status_5xx}=%v, want %v", got, want)
		}
		if got := testutil.ToFloat64(m.upstreamErrors.WithLabelValues("dial")); got != 0 {
			t.Errorf("upstream_errors_total{reason=dial}=%v, want 0", got)
		}
	})
	t.Run("Rejected", func(t *testing.T) {
		for _, r := range metricRejectReasons {
			m.reject(r)
		}
		m.reject(metricRejectQueueFull)
		if got, want := testutil.ToFloat64(m.rejected.WithLabelValues("queue_full")), 2.0; got != want {
			t.Errorf("rejected_requests_total{reason=queue_full}=%v, want %v", got, want)
		}
		if got, want := testutil.ToFloat64(m.rejected.WithLabelValues("forbidden")), 1.0; got != want {
			t.Errorf("rejected_requests_total{reason=forbidden}=%v, want %v", got, want)
		}
	})
	t.Run("UpstreamRestarts", func(t *testing.T) {
		var n atomic.Int64
		if err := m.countUpstreamRestarts(func() int { return int(n.Load()) }); err != nil {
			t.Fatal(err)
		}
		n.Store(3)
		if got, want := metricsGathered(t, m.registry, "favaproxy_upstream_restarts_total"), 3.0; got != want {
			t.Errorf("upstream_restarts_total=%v, want %v", got, want)
		}
		if err := m.countUpstreamRestarts(func() int { return 0 }); err == nil {
			t.Error("second countUpstreamRestarts succeeded")
		}
	})
}

// TestMetricsServersApart checks that two servers' metrics do not share
// series: each has its own registry.
func TestMetricsServersApart(t *testing.T) {
	a, b := newMetrics(), newMetrics()
	a.IdempotentReplay("main")
	if got := testutil.ToFloat64(b.idempotentReplays.WithLabelValues("main")); got != 0 {
		t.Fatalf("second server's replays=%v, want 0", got)
	}
	if err := a.countUpstreamRestarts(func() int { return 1 }); err != nil {
		t.Fatal(err)
	}
	if err := b.countUpstreamRestarts(func() int { return 1 }); err != nil {
		t.Fatalf("second server: %v", err)
	}
}

func TestMetricsNil(t *testing.T) {
	var m *metrics
	metricsExercise(t, m) // must not panic
	m.QueueDepth("main", 1)
	rec := httptest.NewRecorder()
	m.metricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if got, want := rec.Code, http.StatusNotFound; got != want {
		t.Fatalf("status=%d, want %d", got, want)
	}
}

func TestMetricsHandler(t *testing.T) {
	m := newMetrics()
	metricsExercise(t, m)
	srv := httptest.NewServer(m.metricsHandler())
	defer srv.Close()

	res, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.StatusCode, http.StatusOK; got != want {
		t.Fatalf("status=%d, want %d", got, want)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type=%q, want text/plain", ct)
	}
	text := string(body)
	for _, name := range metricsNames {
		if !strings.Contains(text, "\n# TYPE "+name+" ") {
			t.Errorf("scrape has no TYPE line for %s", name)
		}
	}
	for _, line := range []string{
		`favaproxy_requests_total{code="200",kind="write"} 1`,
		`favaproxy_conflicts_total{kind="file",ledger="main",resolution="merged"} 1`,
		`favaproxy_lock_wait_seconds_bucket{ledger="main",mode="exclusive",le="0.0025"} 1`,
		`favaproxy_write_queue_depth{ledger="main"} 3`,
		`favaproxy_batch_size_sum{ledger="main"} 5`,
		`favaproxy_upstream_restarts_total 2`,
		`favaproxy_rejected_requests_total{reason="lock_timeout"} 0`,
		`go_goroutines `,
	} {
		if !strings.Contains(text, line) {
			t.Errorf("scrape lacks %q", line)
		}
	}
}
