package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/auth"
	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/ledger"
	"github.com/favaproxy/favaproxy/lock"
)

// scrape gets /metrics over HTTP and parses Prometheus' text format.
func scrape(tb testing.TB, base string) map[string]*dto.MetricFamily {
	tb.Helper()
	resp, err := noRedirect.Get(base + PathMetrics)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		tb.Fatalf("GET /metrics status=%d, want %d", got, want)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return mfs
}

// sample returns the counter or gauge value, or the histogram's count, of
// the series of family name whose labels include want ("k=v" pairs); 0 when
// there is none.
func sample(mfs map[string]*dto.MetricFamily, name string, want ...string) float64 {
	mf := mfs[name]
	if mf == nil {
		return 0
	}
	var sum float64
series:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		for _, kv := range want {
			k, v, _ := strings.Cut(kv, "=")
			if labels[k] != v {
				continue series
			}
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum
}

// TestMetricsScrapedAfterMix runs reads, writes, a lock timeout, a 413, an
// auth failure, a 403 and an unreachable Fava through a Server, scrapes
// /metrics and finds each counter moved by what happened.
func TestMetricsScrapedAfterMix(t *testing.T) {
	up := &recordingFava{}
	upSrv := startUpstream(t, up)
	token, sum, err := auth.GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	viewerToken, viewerSum, err := auth.GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, upSrv.URL)
	cfg.Auth = config.Auth{Mode: "token", ReadOnlyUsers: []string{"viewer"}, Tokens: []config.Token{
		{User: "alice", SHA256: sum}, {User: "viewer", SHA256: viewerSum}}}
	cfg.LockTimeout = 100 * time.Millisecond
	cfg.Limits.JSONBody = 1024
	lk := ledger.NewRWLock()
	p := startProxy(t, cfg, sharedLock(lk))
	alice := http.Header{"Authorization": {"Bearer " + token}}
	viewer := http.Header{"Authorization": {"Bearer " + viewerToken}}
	read := p.URL + "/" + testSlug + "/api/ledger_data"
	write := p.URL + "/" + testSlug + "/api/format_source"

	before := scrape(t, p.URL)
	expect := func(method, url, body string, h http.Header, status int) {
		t.Helper()
		resp, rb := do(t, method, url, body, h)
		if got := resp.StatusCode; got != status {
			t.Fatalf("%s %s status=%d, want %d; body %s", method, url, got, status, rb)
		}
	}
	for range 3 {
		expect("GET", read, "", alice, http.StatusOK)
	}
	for range 2 {
		expect("PUT", write, `{"source":""}`, alice, http.StatusOK)
	}
	expect("PUT", write, strings.Repeat("x", 2048), alice, http.StatusRequestEntityTooLarge)
	expect("GET", read, "", nil, http.StatusUnauthorized)
	expect("PUT", write, `{"source":""}`, viewer, http.StatusForbidden)
	release, err := lk.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	expect("PUT", write, `{"source":""}`, alice, http.StatusServiceUnavailable)
	release()
	upSrv.Close() // Fava gone: the next read is a 502
	expect("GET", read, "", alice, http.StatusBadGateway)

	after := scrape(t, p.URL)
	for _, c := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"favaproxy_requests_total", []string{"kind=read", "code=200"}, 3},
		{"favaproxy_requests_total", []string{"kind=write", "code=200"}, 2},
		{"favaproxy_requests_total", []string{"kind=write", "code=413"}, 1},
		{"favaproxy_requests_total", []string{"kind=read", "code=401"}, 1},
		{"favaproxy_requests_total", []string{"kind=write", "code=403"}, 1},
		{"favaproxy_requests_total", []string{"kind=write", "code=503"}, 1},
		{"favaproxy_requests_total", []string{"kind=read", "code=502"}, 1},
		{"favaproxy_requests_total", []string{"kind=other", "code=200"}, 1}, // the first scrape
		{"favaproxy_rejected_requests_total", []string{"reason=too_large"}, 1},
		{"favaproxy_rejected_requests_total", []string{"reason=unauthorized"}, 1},
		{"favaproxy_rejected_requests_total", []string{"reason=forbidden"}, 1},
		{"favaproxy_rejected_requests_total", []string{"reason=lock_timeout"}, 1},
		{"favaproxy_rejected_requests_total", []string{"reason=queue_full"}, 0},
		{"favaproxy_rejected_requests_total", []string{"reason=invalid"}, 0},
		{"favaproxy_upstream_errors_total", []string{"reason=dial"}, 1},
		{"favaproxy_lock_wait_seconds", []string{"ledger=" + testSlug, "mode=shared"}, 4},
		{"favaproxy_lock_hold_seconds", []string{"ledger=" + testSlug, "mode=shared"}, 4},
		{"favaproxy_lock_wait_seconds", []string{"ledger=" + testSlug, "mode=exclusive"}, 3},
		{"favaproxy_lock_hold_seconds", []string{"ledger=" + testSlug, "mode=exclusive"}, 2},
		{"favaproxy_upstream_request_duration_seconds", []string{"kind=read"}, 3},
		{"favaproxy_upstream_request_duration_seconds", []string{"kind=write"}, 2},
		{"favaproxy_request_duration_seconds", []string{"kind=write"}, 5},
		{"favaproxy_write_queue_depth", []string{"ledger=" + testSlug}, 0},
	} {
		name := c.name + "{" + strings.Join(c.labels, ",") + "}"
		got := sample(after, c.name, c.labels...) - sample(before, c.name, c.labels...)
		if got != c.delta {
			t.Errorf("%s moved by %v, want %v", name, got, c.delta)
		}
	}
	if _, ok := after["favaproxy_write_queue_depth"]; !ok {
		t.Errorf("favaproxy_write_queue_depth not exported")
	}
}

// TestMetricsDisabled pins that metrics.disabled serves no /metrics.
func TestMetricsDisabled(t *testing.T) {
	cfg := testConfig(t, startUpstream(t, &recordingFava{}).URL)
	cfg.Metrics.Disabled = true
	p := startProxy(t, cfg, Options{})
	resp, _ := do(t, "GET", p.URL+PathMetrics, "", nil)
	if got, want := resp.StatusCode, http.StatusNotFound; got != want {
		t.Fatalf("status=%d, want %d", got, want)
	}
}

// TestMetricsLockTimesOfAddEntries pins that group-committed add_entries
// writes, which take the ledger lock through their batch, report their lock
// wait and hold time like every other write.
func TestMetricsLockTimesOfAddEntries(t *testing.T) {
	e := startEmu(t, favatest.Style130, emuOpts{})
	before := scrape(t, e.p.URL)
	for _, payee := range []string{"Coffee", "Tea"} {
		resp, m := e.call(http.MethodPut, "add_entries", nil, json.RawMessage(entriesBody(txn(payee))))
		e.wantSuccess("add_entries", resp, m)
	}
	after := scrape(t, e.p.URL)
	for _, name := range []string{"favaproxy_lock_wait_seconds", "favaproxy_lock_hold_seconds"} {
		labels := []string{"ledger=" + testSlug, "mode=exclusive"}
		if got, want := sample(after, name, labels...)-sample(before, name, labels...), 2.0; got != want {
			t.Errorf("%s{mode=exclusive} moved by %v, want %v", name, got, want)
		}
	}
}

// TestWriteOutcome pins the outcome field of a write's log line.
func TestWriteOutcome(t *testing.T) {
	for _, tc := range []struct {
		resp *ledger.Response
		err  error
		want string
	}{
		{&ledger.Response{Status: 200}, nil, "ok"},
		{&ledger.Response{Status: 500}, nil, "fava_error"},
		{&ledger.Response{Status: 409, Refused: "requirement_failed"}, nil, "requirement_failed"},
		{&ledger.Response{Status: 412, Refused: "precondition_failed"}, nil, "precondition_failed"},
		{nil, favaproxy.Errorf(favaproxy.EInvalid, "x"), "invalid"},
	} {
		if got := writeOutcome(tc.resp, tc.err); got != tc.want {
			t.Errorf("writeOutcome(%+v, %v) = %q, want %q", tc.resp, tc.err, got, tc.want)
		}
	}
}

// TestMetricsLockEvents: the hooks a ledger's lock gets count its lease
// losses and fencing refusals under the ledger's slug, from zero.
func TestMetricsLockEvents(t *testing.T) {
	cfg := testConfig(t, startUpstream(t, &recordingFava{}).URL)
	var hooks lock.EtcdHooks
	p := startProxy(t, cfg, Options{NewLocker: func(_ config.Ledger, h lock.EtcdHooks) (ledger.Locker, error) {
		hooks = h
		return nil, nil
	}})
	mfs := scrape(t, p.URL)
	for _, name := range []string{"favaproxy_lock_lease_losses_total", "favaproxy_lock_fencing_refusals_total"} {
		if mfs[name] == nil || sample(mfs, name, "ledger="+testSlug) != 0 {
			t.Errorf("%s: want a series at 0 before any event", name)
		}
	}
	hooks.LeaseLost()
	hooks.Fenced()
	hooks.Fenced()
	mfs = scrape(t, p.URL)
	if got := sample(mfs, "favaproxy_lock_lease_losses_total", "ledger="+testSlug); got != 1 {
		t.Errorf("lease losses %v, want 1", got)
	}
	if got := sample(mfs, "favaproxy_lock_fencing_refusals_total", "ledger="+testSlug); got != 2 {
		t.Errorf("fencing refusals %v, want 2", got)
	}
}
