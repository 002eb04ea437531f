package proxy

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/journal"
	"github.com/favaproxy/favaproxy/ledger"
)

// mixStep is one write of writeMix and what its journal record must say.
type mixStep struct {
	user, kind, route, outcome string
	status                     int
	// before and after are the main file's checksums around the write.
	before, after string
}

// fileSum is Fava's checksum of the file at path as it is now.
func fileSum(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return checksum.File(b)
}

// callAs is e.call as user (HTTP Basic user name), with header extra.
func (e *emuEnv) callAs(user, method, name string, q url.Values, body any, extra http.Header) (*http.Response, map[string]any) {
	e.tb.Helper()
	h := http.Header{"Authorization": {basicAuth(user)}}
	for k, v := range extra {
		h[k] = v
	}
	return e.callWith(method, name, q, body, h)
}

// writeMix runs a scripted mix of writes of every kind through e's proxy,
// each as another user, and returns what each one's journal record must
// say: add_entries with a key, its replay, a PUT source that inserts an
// entry above the others, a slice edit of a moved entry (relocated), a
// slice edit of an entry that is gone (409 slice), a stale PUT source that
// merges, one whose base is unknown (409 file), add_account, and a write of
// another kind that Fava refuses.
func writeMix(e *emuEnv) []mixStep {
	tb := e.tb
	tb.Helper()
	var steps []mixStep
	step := func(user, kind, method, name, outcome string, status int, before string, resp *http.Response) {
		tb.Helper()
		if got := resp.StatusCode; got != status {
			tb.Fatalf("%s %s by %s: status %d, want %d", method, name, user, got, status)
		}
		steps = append(steps, mixStep{user: user, kind: kind, route: method + " /" + testSlug + "/api/" + name,
			outcome: outcome, status: status, before: before, after: fileSum(tb, e.main)})
	}

	eggs := e.findEntry("2024-02-03 *")
	staleText, staleSum := e.getSource(e.main)

	// alice adds an entry with a key, then retries it.
	before := fileSum(tb, e.main)
	body := json.RawMessage(entriesBody(txn("Coffee")))
	resp, m := e.callAs("alice", http.MethodPut, "add_entries", nil, body, http.Header{"Idempotency-Key": {"mix-1"}})
	e.wantSuccess("add_entries", resp, m)
	step("alice", "add_entries", "PUT", "add_entries", journal.OutcomeOK, http.StatusOK, before, resp)
	before = fileSum(tb, e.main)
	resp, _ = e.callAs("alice", http.MethodPut, "add_entries", nil, body, http.Header{"Idempotency-Key": {"mix-1"}})
	if got := resp.Header.Get(ledger.ReplayedHeader); got != "true" {
		tb.Fatalf("retried add_entries: %s=%q, want true", ledger.ReplayedHeader, got)
	}
	step("alice", "add_entries", "PUT", "add_entries", journal.OutcomeReplayed, http.StatusOK, before, resp)

	// bob inserts an entry above the others with PUT source.
	text, sum := e.getSource(e.main)
	before = fileSum(tb, e.main)
	resp, m = e.callAs("bob", http.MethodPut, "source", nil, sourceBody{FilePath: e.main,
		Source: strings.Replace(text, "2024-02-01 *", cakeEntry+"2024-02-01 *", 1), SHA256: sum}, nil)
	e.wantSuccess("PUT source", resp, m)
	step("bob", "source", "PUT", "source", journal.OutcomeOK, http.StatusOK, before, resp)

	// dave deletes Eggs with its old hash: the entry moved, favaproxy
	// relocates it.
	before = fileSum(tb, e.main)
	resp, m = e.callAs("dave", http.MethodDelete, "source_slice", url.Values{"entry_hash": {eggs.hash}, "sha256sum": {eggs.sum}}, nil, nil)
	e.wantSuccess("DELETE source_slice", resp, m)
	if got := resp.Header.Get(ledger.RelocatedHeader); got != "true" {
		tb.Fatalf("DELETE source_slice: %s=%q, want true", ledger.RelocatedHeader, got)
	}
	step("dave", "source_slice", "DELETE", "source_slice", journal.OutcomeRelocated, http.StatusOK, before, resp)

	// dave deletes Eggs again: gone, 409 of kind slice.
	before = fileSum(tb, e.main)
	resp, m = e.callAs("dave", http.MethodDelete, "source_slice", url.Values{"entry_hash": {eggs.hash}, "sha256sum": {eggs.sum}}, nil, nil)
	e.wantConflict("second DELETE source_slice", resp, m, "slice")
	step("dave", "source_slice", "DELETE", "source_slice", journal.OutcomeConflict, http.StatusConflict, before, resp)

	// erin edits Milk from the version before bob's and dave's writes:
	// merged.
	before = fileSum(tb, e.main)
	resp, m = e.callAs("erin", http.MethodPut, "source", nil, sourceBody{FilePath: e.main,
		Source: strings.Replace(staleText, `"Milk"`, `"Oat milk"`, 1), SHA256: staleSum}, nil)
	e.wantSuccess("stale PUT source", resp, m)
	if got := resp.Header.Get(ledger.MergedHeader); got != "true" {
		tb.Fatalf("stale PUT source: %s=%q, want true", ledger.MergedHeader, got)
	}
	step("erin", "source", "PUT", "source", journal.OutcomeMerged, http.StatusOK, before, resp)

	// frank sends a checksum favaproxy never saw: 409 of kind file.
	before = fileSum(tb, e.main)
	resp, m = e.callAs("frank", http.MethodPut, "source", nil, sourceBody{FilePath: e.main,
		Source: "; nothing\n", SHA256: checksum.String("never served")}, nil)
	e.wantConflict("PUT source of an unknown base", resp, m, "file")
	step("frank", "source", "PUT", "source", journal.OutcomeConflict, http.StatusConflict, before, resp)

	// carol opens an account.
	before = fileSum(tb, e.main)
	resp, m = e.callAs("carol", http.MethodPut, "add_account", nil, map[string]any{"account": "Assets:Cash"}, nil)
	e.wantSuccess("add_account", resp, m)
	step("carol", "add_account", "PUT", "add_account", journal.OutcomeOK, http.StatusOK, before, resp)

	// gina formats a source: a write of another kind, which changes no
	// file.
	before = fileSum(tb, e.main)
	resp, _ = e.callAs("gina", http.MethodPut, "format_source", nil, map[string]any{"source": "2024-01-01 open Assets:X\n"}, nil)
	step("gina", "write", "PUT", "format_source", journal.OutcomeOK, resp.StatusCode, before, resp)
	return steps
}

// TestAuditEveryWrite runs writes of every kind by several users through a
// Server in front of the emulator, in both wire styles, and finds one
// journal record per write, in order, with its user, kind, route, outcome,
// status and the main file's checksums before and after.
func TestAuditEveryWrite(t *testing.T) {
	for _, style := range []string{favatest.Style127, favatest.Style1308} {
		t.Run(style, func(t *testing.T) {
			e := startEmu(t, style, emuOpts{})
			steps := writeMix(e)

			var recs []journal.Record
			path := journal.Path(e.p.cfg.Ledgers[0].StatePath(), e.main)
			if err := journal.Read(path, journal.Filter{}, func(r journal.Record) error {
				recs = append(recs, r)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if got, want := len(recs), len(steps); got != want {
				for _, r := range recs {
					t.Logf("%+v", r)
				}
				t.Fatalf("%d journal records, want %d", got, want)
			}
			for i, st := range steps {
				r := recs[i]
				if r.User != st.user || r.Kind != st.kind || r.Outcome != st.outcome || r.Status != st.status {
					t.Errorf("record %d: user=%q kind=%q outcome=%q status=%d, want %q %q %q %d",
						i, r.User, r.Kind, r.Outcome, r.Status, st.user, st.kind, st.outcome, st.status)
				}
				if st.kind != "add_entries" && r.Route != st.route {
					t.Errorf("record %d: route=%q, want %q", i, r.Route, st.route)
				}
				if r.RequestID == "" || r.Ledger != testSlug || r.Time.IsZero() {
					t.Errorf("record %d: request_id=%q ledger=%q time=%v", i, r.RequestID, r.Ledger, r.Time)
				}
				if st.kind != "add_entries" && r.Key != "" {
					t.Errorf("record %d: key=%q on a %s record", i, r.Key, st.kind)
				}
				if len(r.Files) != 1 {
					t.Errorf("record %d: files %+v, want the main file", i, r.Files)
					continue
				}
				if f := r.Files[0]; f.Path != e.main || f.Before != st.before || f.After != st.after {
					t.Errorf("record %d (%s by %s): file %+v, want %s %s→%s", i, st.kind, st.user, f, e.main, st.before, st.after)
				}
			}
		})
	}
}

// TestMetricsConflictsAndReplays runs the same mix and finds the conflict
// and idempotency counters moved by what happened: a relocated slice edit
// (its hash was unknown to Fava), a slice 409, a merge, a file 409 and a
// replay.
func TestMetricsConflictsAndReplays(t *testing.T) {
	e := startEmu(t, favatest.Style130, emuOpts{})
	before := scrape(t, e.p.URL)
	writeMix(e)
	// A key reused for another request: 422.
	resp, _ := e.callAs("alice", http.MethodPut, "add_entries", nil, json.RawMessage(entriesBody(txn("Tea"))),
		http.Header{"Idempotency-Key": {"mix-1"}})
	if got, want := resp.StatusCode, http.StatusUnprocessableEntity; got != want {
		t.Fatalf("reused key: status %d, want %d", got, want)
	}
	after := scrape(t, e.p.URL)
	l := "ledger=" + testSlug
	for _, c := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"favaproxy_conflicts_total", []string{l, "kind=entry_hash", "resolution=relocated"}, 1},
		{"favaproxy_conflicts_total", []string{l, "kind=entry_hash", "resolution=answered_409"}, 1},
		{"favaproxy_conflicts_total", []string{l, "kind=file", "resolution=merged"}, 1},
		{"favaproxy_conflicts_total", []string{l, "kind=file", "resolution=answered_409"}, 1},
		{"favaproxy_conflicts_total", []string{l, "kind=file", "resolution=retried"}, 0},
		{"favaproxy_conflicts_total", []string{l}, 4},
		{"favaproxy_idempotent_replays_total", []string{l}, 1},
		{"favaproxy_idempotency_mismatches_total", []string{l}, 1},
	} {
		name := c.name + "{" + strings.Join(c.labels, ",") + "}"
		if got := sample(after, c.name, c.labels...) - sample(before, c.name, c.labels...); got != c.delta {
			t.Errorf("%s moved by %v, want %v", name, got, c.delta)
		}
	}
}
