package proxy

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

// TestWriteLogLine pins the log of a write: exactly one line, with user,
// ledger, kind, idempotency key, batch size, lock wait, upstream time,
// outcome and request ID, and neither the body nor the credentials; the
// client's X-Request-ID is forwarded to Fava and echoed in the answer.
func TestWriteLogLine(t *testing.T) {
	up := &recordingFava{}
	p := startProxy(t, testConfig(t, startUpstream(t, up).URL), Options{})
	const body = `{"source":"BODY-MARKER"}`
	resp, rb := do(t, "PUT", p.URL+"/"+testSlug+"/api/format_source", body, http.Header{
		"Idempotency-Key": {"key-7"},
		"X-Request-Id":    {"rid-42"},
		"Authorization":   {basicValue("alice", "secret-pw")},
	})
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Fatalf("status=%d, want %d; body %s", got, want, rb)
	}
	if got, want := resp.Header.Values("X-Request-Id"), []string{"rid-42"}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("answer X-Request-ID=%q, want %q", got, want)
	}
	seen := up.Take()
	if len(seen) != 1 {
		t.Fatalf("Fava received %d requests, want 1", len(seen))
	}
	if got, want := seen[0].Header.Get("X-Request-Id"), "rid-42"; got != want {
		t.Errorf("X-Request-ID at Fava=%q, want %q", got, want)
	}
	if got := seen[0].Header.Get("Idempotency-Key"); got != "" {
		t.Errorf("Idempotency-Key forwarded: %q", got)
	}

	log := p.Log.String()
	var lines []string
	for l := range strings.Lines(log) {
		if strings.Contains(l, "msg=write") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d write lines, want 1:\n%s", len(lines), log)
	}
	for _, want := range []string{
		"user=alice", "ledger=" + testSlug, "kind=write", "idempotency_key=key-7", "batch=1",
		"lock_wait=", "upstream=", "outcome=ok", "request_id=rid-42", "status=200",
	} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("write line lacks %q: %s", want, lines[0])
		}
	}
	for _, secret := range []string{"BODY-MARKER", "secret-pw", base64.StdEncoding.EncodeToString([]byte("alice:secret-pw"))} {
		if strings.Contains(log, secret) {
			t.Errorf("log holds %q:\n%s", secret, log)
		}
	}
}

// TestAddEntriesLogBatch pins that an add_entries write logs the size of
// the batch that carried it and is counted in favaproxy_batch_size.
func TestAddEntriesLogBatch(t *testing.T) {
	p, _, _, _ := hostileProxy(t, nil)
	before := scrape(t, p.URL)
	resp, body := do(t, "PUT", p.URL+"/"+testSlug+"/api/add_entries",
		hostileTxn("Lunch", "Expenses:Food", "inv-9", "m"), http.Header{"X-Remote-User": {"alice"}, "Idempotency-Key": {"k-9"}})
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Fatalf("status=%d, want %d; body %s", got, want, body)
	}
	var line string
	for l := range strings.Lines(p.Log.String()) {
		if strings.Contains(l, "msg=write") {
			line = l
		}
	}
	for _, want := range []string{"kind=add_entries", "batch=1", "idempotency_key=k-9", "outcome=ok", "user=alice"} {
		if !strings.Contains(line, want) {
			t.Errorf("write line lacks %q: %s", want, line)
		}
	}
	after := scrape(t, p.URL)
	if got := sample(after, "favaproxy_batch_size", "ledger="+testSlug) - sample(before, "favaproxy_batch_size", "ledger="+testSlug); got != 1 {
		t.Errorf("favaproxy_batch_size observed %v batches, want 1", got)
	}
}

// TestDerivedWritesLogBatch pins that writes favaproxy sends to Fava in
// its own words (PUT source, add_account) log the batch of one that
// carried them, and a write answered without Fava logs none.
func TestDerivedWritesLogBatch(t *testing.T) {
	e := startEmu(t, emuStyles[1], emuOpts{})
	text, sum := e.getSource(e.main)
	resp, m := e.call(http.MethodPut, "source", nil, sourceBody{FilePath: e.main, Source: strings.Replace(text, `"Bread"`, `"Toast"`, 1), SHA256: sum})
	e.wantSuccess("PUT source", resp, m)
	resp, m = e.call(http.MethodPut, "add_account", nil, map[string]any{"account": "Assets:Cash"})
	e.wantSuccess("add_account", resp, m)
	resp, m = e.call(http.MethodPut, "add_account", nil, map[string]any{"account": "Assets:Cash"})
	e.wantSuccess("add_account again", resp, m)
	var got []string
	for l := range strings.Lines(e.p.Log.String()) {
		if !strings.Contains(l, "msg=write") {
			continue
		}
		for _, f := range strings.Fields(l) {
			if strings.HasPrefix(f, "kind=") || strings.HasPrefix(f, "batch=") {
				got = append(got, f)
			}
		}
	}
	want := []string{"kind=source", "batch=1", "kind=add_account", "batch=1", "kind=add_account", "batch=0"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("write lines say %q, want %q\n%s", got, want, e.p.Log.String())
	}
}
