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
// idempotency and path checks were skipped, while favaproxy upper-cased it
// on the way to Fava, which executed it (a newline in a link wrote an open
// directive; two keyed retries stored two copies). Fava's server (cheroot)
// refuses such methods; favaproxy now does too, with 400, on every route.
func TestMethodCasingCannotSkipChecks(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "option \"documents\" \"docs\"\n")
	e.start(t, Options{})
	api := strings.TrimSuffix(e.url, "add_entries")
	injected := `{"t":"Transaction","date":"2024-06-01","flag":"*","payee":"","narration":"x","tags":[],"links":["a\n2024-01-01 open Assets:Evil"],"meta":{},` +
		`"postings":[{"account":"Expenses:Food","amount":"1 USD"},{"account":"Assets:Bank","amount":""}]}`
	before := e.ledgerText(t)
	for _, m := range casings(http.MethodPut)[1:] {
		h := http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"k-case"}}
		for _, body := range []string{entriesBody(injected), entriesBody(txn("cased"))} {
			resp, b := do(t, m, e.url, body, h)
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%s add_entries: status=%d, want 400; %s", m, resp.StatusCode, b)
			}
		}
		resp, b := do(t, m, api+"attach_document", `{"filename":"/etc/passwd","entry_hash":"x"}`, h)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s attach_document: status=%d, want 400; %s", m, resp.StatusCode, b)
		}
	}
	for _, m := range append(casings(http.MethodDelete)[1:], casings(http.MethodGet)[1:]...) {
		resp, b := do(t, m, api+"document?"+url.Values{"filename": {"/etc/passwd"}}.Encode(), "", nil)
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status=%d, want 400; %s", m, resp.StatusCode, b)
		}
	}
	if e.front.calls.Load() != 0 || e.ledgerText(t) != before {
		t.Fatal("a request with a method that is not upper-case reached Fava or the ledger")
	}
	// The same requests, upper-case, get their checks.
	resp, b := do(t, http.MethodPut, e.url, entriesBody(injected), http.Header{"Content-Type": {"application/json"}})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(b, "links") {
		t.Errorf("PUT add_entries with a newline in a link: status=%d, want 400 naming the link; %s", resp.StatusCode, b)
	}
}
