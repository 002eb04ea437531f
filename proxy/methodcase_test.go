package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/internal/favatest"
)

// casings returns method in every casing worth trying.
func casings(method string) []string {
	lower := strings.ToLower(method)
	return []string{method, lower, strings.ToUpper(lower[:1]) + lower[1:], lower[:1] + strings.ToUpper(lower[1:])}
}

// TestMethodCasingCannotSkipChecks pins a bypass: a method in another
// casing ("put") was not classified as the write it is, so validation,
// idempotency and path checks were skipped, while Fava (werkzeug
// upper-cases methods) executed it. Every write route in every casing gets
// the same checks: a newline in a link is refused, a keyed request is
// written once, a source read of a file outside the ledger and a document
// write outside its folders are refused.
func TestMethodCasingCannotSkipChecks(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "option \"documents\" \"docs\"\n")
	e.start(t, Options{})
	api := strings.TrimSuffix(e.url, "add_entries")
	injected := `{"t":"Transaction","date":"2024-06-01","flag":"*","payee":"","narration":"x","tags":[],"links":["a\n2024-01-01 open Assets:Evil"],"meta":{},` +
		`"postings":[{"account":"Expenses:Food","amount":"1 USD"},{"account":"Assets:Bank","amount":""}]}`
	for i, m := range casings(http.MethodPut) {
		resp, body := do(t, m, e.url, entriesBody(injected), http.Header{"Content-Type": {"application/json"}})
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s add_entries with a newline in a link: status=%d, want 400; %s", m, resp.StatusCode, body)
		}
		h := http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"k-case"}}
		resp, body = do(t, m, e.url, entriesBody(txn("cased")), h)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s keyed add_entries: status=%d; %s", m, resp.StatusCode, body)
		}
		if got, want := resp.Header.Get("Idempotent-Replayed") == "true", i > 0; got != want {
			t.Errorf("%s keyed add_entries: replayed=%v, want %v", m, got, want)
		}
		resp, body = do(t, m, api+"attach_document", `{"filename":"/etc/passwd","entry_hash":"x"}`, h)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s attach_document outside the documents folder: status=%d, want 400; %s", m, resp.StatusCode, body)
		}
	}
	for _, m := range casings(http.MethodDelete) {
		resp, body := do(t, m, api+"document?"+url.Values{"filename": {"/etc/passwd"}}.Encode(), "", nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s document outside the documents folder: status=%d, want 400; %s", m, resp.StatusCode, body)
		}
	}
	for _, m := range casings(http.MethodGet) {
		resp, body := do(t, m, api+"source?"+url.Values{"filename": {"/etc/passwd"}}.Encode(), "", nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s source of a file outside the ledger: status=%d, want 400; %s", m, resp.StatusCode, body)
		}
	}
	text := e.ledgerText(t)
	if strings.Contains(text, "Assets:Evil") {
		t.Fatal("an injected directive reached the ledger")
	}
	if got := strings.Count(text, "^idem-k-case"); got != 1 {
		t.Fatalf("the keyed entry is in the ledger %d times, want 1", got)
	}
}
