package proxy

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/internal/favatest"
)

// putEntriesIf is putEntries with If-Match (when ifMatch is not empty).
func putEntriesIf(tb testing.TB, url, user, key, ifMatch, body string) (*http.Response, string) {
	tb.Helper()
	h := http.Header{"Content-Type": {"application/json"}, "Authorization": {basicAuth(user)}}
	if key != "" {
		h.Set("Idempotency-Key", key)
	}
	if ifMatch != "" {
		h.Set("If-Match", ifMatch)
	}
	return do(tb, http.MethodPut, url, body, h)
}

// readETag reads the ledger's errors through the proxy and returns the
// answer's ETag.
func readETag(tb testing.TB, e *addEnv) string {
	tb.Helper()
	resp, body := do(tb, http.MethodGet, strings.TrimSuffix(e.url, "add_entries")+"errors", "", nil)
	et := resp.Header.Get("ETag")
	if resp.StatusCode != http.StatusOK || !strongTag.MatchString(et) {
		tb.Fatalf("read: status=%d ETag=%q; %s", resp.StatusCode, et, body)
	}
	return et
}

// TestIfMatchOneOfTwoWins: two clients read the same version and both
// write with If-Match: one is written, the other gets 412 with the current
// version (as ETag and in the body, with Fava's keys), and nothing of it is
// written; written again with that version, it lands.
func TestIfMatchOneOfTwoWins(t *testing.T) {
	for _, style := range styles {
		t.Run(style, func(t *testing.T) {
			e := newAddEnv(t, style, "")
			e.start(t, Options{})
			v := readETag(t, e)
			if again := readETag(t, e); again != v {
				t.Fatalf("two reads of an unchanged ledger: ETag %s then %s", v, again)
			}
			resp, body := putEntriesIf(t, e.url, "alice", "", v, entriesBody(txn("first")))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("first: status=%d; %s", resp.StatusCode, body)
			}
			after := resp.Header.Get("ETag")
			if after == v || !strongTag.MatchString(after) {
				t.Errorf("first write's ETag %q, want the new version (was %s)", after, v)
			}
			resp, body = putEntriesIf(t, e.url, "bob", "", v, entriesBody(txn("second")))
			if got, want := resp.StatusCode, http.StatusPreconditionFailed; got != want {
				t.Fatalf("second: status=%d, want %d; %s", got, want, body)
			}
			m := jsonBody(t, resp, body)
			cur := readETag(t, e)
			if resp.Header.Get("ETag") != cur || m["etag"] != cur || m["error"] == nil {
				t.Errorf("412: ETag %q, body %s; want the current version %s and an error", resp.Header.Get("ETag"), body, cur)
			}
			if cur != after {
				t.Errorf("current version %s, want the first write's %s", cur, after)
			}
			if _, ok := m["success"]; ok != (style == favatest.Style127) {
				t.Errorf("412 body %s: success key present=%v in style %s", body, ok, style)
			}
			if strings.Contains(e.ledgerText(t), "second") {
				t.Fatal("the refused write is in the ledger")
			}
			resp, body = putEntriesIf(t, e.url, "bob", "", cur, entriesBody(txn("second")))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("second with the fresh version: status=%d; %s", resp.StatusCode, body)
			}
			text := e.ledgerText(t)
			if strings.Count(text, "first") != 1 || strings.Count(text, "second") != 1 {
				t.Fatalf("want each entry once:\n%s", text)
			}
		})
	}
}

// TestIfMatchSeesOutsideWriters: a change made behind favaproxy's back is
// a new version too.
func TestIfMatchSeesOutsideWriters(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	e.start(t, Options{})
	v := readETag(t, e)
	f, err := os.OpenFile(e.file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("\n; edited by hand\n")
	f.Close()
	resp, body := putEntriesIf(t, e.url, "alice", "", v, entriesBody(txn("late")))
	if got, want := resp.StatusCode, http.StatusPreconditionFailed; got != want {
		t.Fatalf("status=%d, want %d; %s", got, want, body)
	}
}

// TestIfMatchForms: "*" and a list holding the current version pass; a
// weak tag never matches; If-None-Match: * fails (the ledger exists);
// malformed headers are refused with 400 naming the header.
func TestIfMatchForms(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	e.start(t, Options{})
	for _, tc := range []struct {
		name   string
		header http.Header
		want   int
	}{
		{"Star", http.Header{"If-Match": {"*"}}, http.StatusOK},
		{"ListWithCurrent", http.Header{"If-Match": {`"0123", CURRENT`}}, http.StatusOK},
		{"Weak", http.Header{"If-Match": {"W/CURRENT"}}, http.StatusPreconditionFailed},
		{"NoneMatchStar", http.Header{"If-None-Match": {"*"}}, http.StatusPreconditionFailed},
		{"NoneMatchTag", http.Header{"If-None-Match": {"CURRENT"}}, http.StatusBadRequest},
		{"Unquoted", http.Header{"If-Match": {"abc"}}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cur := readETag(t, e)
			h := http.Header{"Content-Type": {"application/json"}}
			for k, vs := range tc.header {
				h.Set(k, strings.ReplaceAll(vs[0], "CURRENT", cur))
			}
			resp, body := do(t, http.MethodPut, e.url, entriesBody(txn("form-"+tc.name)), h)
			if got := resp.StatusCode; got != tc.want {
				t.Fatalf("status=%d, want %d; %s", got, tc.want, body)
			}
			if tc.want == http.StatusBadRequest && !strings.Contains(body, "If-") {
				t.Errorf("400 does not name the header: %s", body)
			}
		})
	}
}

// TestIfMatchKeyedReplay: a conditional keyed write retried with the same
// key replays its first answer even though its If-Match no longer holds.
func TestIfMatchKeyedReplay(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	e.start(t, Options{})
	v := readETag(t, e)
	first, fbody := putEntriesIf(t, e.url, "alice", "k-if", v, entriesBody(txn("once")))
	if first.StatusCode != http.StatusOK {
		t.Fatalf("first: status=%d; %s", first.StatusCode, fbody)
	}
	again, abody := putEntriesIf(t, e.url, "alice", "k-if", v, entriesBody(txn("once")))
	if again.StatusCode != http.StatusOK || again.Header.Get("Idempotent-Replayed") != "true" || abody != fbody {
		t.Fatalf("retry: status=%d replayed=%q body %q; want the first answer %q", again.StatusCode, again.Header.Get("Idempotent-Replayed"), abody, fbody)
	}
}

// TestIfMatchOnSource: PUT source with a stale If-Match is refused before
// Fava sees it, whatever its checksum says.
func TestIfMatchOnSource(t *testing.T) {
	e := startEmu(t, favatest.Style130, emuOpts{})
	resp, _ := e.callWith(http.MethodGet, "errors", nil, nil, nil)
	v := resp.Header.Get("ETag")
	text, sum := e.getSource(e.main)
	resp, m := e.call(http.MethodPut, "source", nil, sourceBody{FilePath: e.main, Source: text + "\n; one\n", SHA256: sum})
	e.wantSuccess("first source write", resp, m)
	text, sum = e.getSource(e.main)
	resp, m = e.callWith(http.MethodPut, "source", nil, sourceBody{FilePath: e.main, Source: text + "\n; two\n", SHA256: sum},
		http.Header{"If-Match": {v}})
	if got, want := resp.StatusCode, http.StatusPreconditionFailed; got != want {
		t.Fatalf("status=%d, want %d; %v", got, want, m)
	}
	if strings.Contains(e.read(), "; two") {
		t.Fatal("the refused source write is in the file")
	}
}
