package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/journal"
	"github.com/favaproxy/favaproxy/ledger"
	"github.com/favaproxy/favaproxy/lock"
)

// addLedger is the ledger the add_entries tests start from.
const addLedger = `option "title" "Test Ledger"

2024-01-01 open Assets:Bank
2024-01-01 open Expenses:Food
`

// refuseMarker in a request makes favaFront refuse the whole add_entries
// call as Fava refuses a bad entry, before writing anything.
const refuseMarker = "REFUSE-ME"

// favaFront is the Fava emulator (real files, Fava's rendering and wire
// styles) with counters and failure knobs for add_entries.
type favaFront struct {
	fava  *favatest.Server
	style string
	// calls counts add_entries calls.
	calls atomic.Int32
	// delay is slept before an add_entries call is handled.
	delay atomic.Int64
	// arrived, if set, gets a value (when it has room) each time an
	// add_entries call arrives.
	arrived chan struct{}
	// hold, if set, holds every add_entries call until it receives a
	// value (or hold is closed), whatever happens to the caller: Fava
	// writes on after favaproxy has given up.
	hold chan struct{}
	// breakAddEntries, when set, closes the connection of every
	// add_entries call without an answer and without writing: Fava died.
	breakAddEntries atomic.Bool
	// refuseAfterFirst, when set, makes a call of several entries that
	// holds refuseMarker write its first entry (through the emulator, so
	// wherever Fava would put it) and then refuse the call: Fava inserts
	// entries one by one and failed on a later one.
	refuseAfterFirst bool
}

func (f *favaFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/api/add_entries") {
		f.calls.Add(1)
		if f.arrived != nil {
			select {
			case f.arrived <- struct{}{}:
			default:
			}
		}
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		if f.hold != nil {
			<-f.hold
		}
		if f.breakAddEntries.Load() {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		if d := time.Duration(f.delay.Load()); d > 0 {
			time.Sleep(d)
		}
		if f.refuseAfterFirst && bytes.Contains(body, []byte(refuseMarker)) {
			var call struct{ Entries []json.RawMessage }
			if json.Unmarshal(body, &call) == nil && len(call.Entries) > 1 {
				first := `{"entries":[` + string(call.Entries[0]) + `]}`
				sub := httptest.NewRequest(http.MethodPut, r.URL.Path, strings.NewReader(first))
				sub.Header.Set("Content-Type", "application/json")
				f.fava.ServeHTTP(httptest.NewRecorder(), sub)
			}
		}
		if bytes.Contains(body, []byte(refuseMarker)) {
			// What Fava answers for an entry it cannot take (an
			// Invalid amount, say): nothing written.
			w.Header().Set("Content-Type", "application/json")
			if f.style == favatest.Style127 {
				io.WriteString(w, `{"error":"Invalid amount.","success":false}`+"\n")
				return
			}
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"error":"Invalid amount."}`+"\n")
			return
		}
	}
	f.fava.ServeHTTP(w, r)
}

// addEnv is favaproxy in front of the emulator on one ledger file.
type addEnv struct {
	front *favaFront
	cfg   config.Config
	file  string
	p     *testProxy
	url   string // the ledger's add_entries URL at favaproxy
}

// newAddEnv writes the ledger (addLedger plus extra), starts the emulator
// in style and returns the environment with a configuration to start
// proxies with (start starts one).
func newAddEnv(tb testing.TB, style, extra string) *addEnv {
	tb.Helper()
	return newAddEnvOpts(tb, favatest.Options{Style: style, ReloadCostPerTxn: -1}, extra)
}

// newAddEnvOpts is newAddEnv with the emulator's options.
func newAddEnvOpts(tb testing.TB, fo favatest.Options, extra string) *addEnv {
	tb.Helper()
	style := fo.Style
	dir := tb.TempDir()
	file := filepath.Join(dir, "main.beancount")
	if err := os.WriteFile(file, []byte(addLedger+extra), 0o644); err != nil {
		tb.Fatal(err)
	}
	fs, err := favatest.New(fo, file)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { fs.Close() })
	front := &favaFront{fava: fs, style: style}
	up := startUpstream(tb, front)
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Upstream = up.URL
	cfg.Ledgers = []config.Ledger{{File: file}}
	cfg.ShutdownGrace = 5 * time.Second
	cfg.Durability.Quiet = 20 * time.Millisecond // Fava that does not answer is gone at once here
	if err := cfg.Validate(); err != nil {
		tb.Fatal(err)
	}
	return &addEnv{front: front, cfg: cfg, file: file}
}

// start starts a favaproxy for e.cfg with o.
func (e *addEnv) start(tb testing.TB, o Options) *testProxy {
	tb.Helper()
	p := startProxy(tb, e.cfg, o)
	e.p, e.url = p, p.URL+"/"+testSlug+"/api/add_entries"
	return p
}

// ledgerText returns the ledger file's content.
func (e *addEnv) ledgerText(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(e.file)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// txn is a Transaction entry whose narration is narration.
func txn(narration string) string {
	return fmt.Sprintf(`{"t":"Transaction","date":"2024-06-01","flag":"*","payee":"","narration":%q,"tags":[],"links":[],"meta":{},`+
		`"postings":[{"account":"Expenses:Food","amount":"1 USD"},{"account":"Assets:Bank","amount":""}]}`, narration)
}

// entriesBody is an add_entries body of entries.
func entriesBody(entries ...string) string {
	return `{"entries":[` + strings.Join(entries, ",") + `]}`
}

// putEntries sends an add_entries request as user with key ("" for none).
func putEntries(tb testing.TB, url, user, key, body string) (*http.Response, string) {
	tb.Helper()
	h := http.Header{"Content-Type": {"application/json"}}
	if key != "" {
		h.Set("Idempotency-Key", key)
	}
	h.Set("Authorization", basicAuth(user))
	return do(tb, "PUT", url, body, h)
}

func basicAuth(user string) string {
	req, _ := http.NewRequest("GET", "http://x/", nil)
	req.SetBasicAuth(user, "pw")
	return req.Header.Get("Authorization")
}

var styles = []string{favatest.Style127, favatest.Style130}

func TestAddEntriesSameKeyInSequence(t *testing.T) {
	for _, style := range styles {
		t.Run(style, func(t *testing.T) {
			e := newAddEnv(t, style, "")
			e.start(t, Options{})
			var first string
			for i := range 10 {
				resp, body := putEntries(t, e.url, "alice", "k1", entriesBody(txn("lunch")))
				if got, want := resp.StatusCode, http.StatusOK; got != want {
					t.Fatalf("request %d: status=%d, want %d; body %s", i, got, want, body)
				}
				replayed := resp.Header.Get(ledger.ReplayedHeader) == "true"
				if got, want := replayed, i > 0; got != want {
					t.Errorf("request %d: replayed=%v, want %v", i, got, want)
				}
				if i == 0 {
					first = body
				} else if body != first {
					t.Errorf("request %d: body %q, want the first reply %q", i, body, first)
				}
			}
			if !strings.Contains(first, "Stored 1 entries.") {
				t.Errorf("first reply %q, want Stored 1 entries.", first)
			}
			if style == favatest.Style127 && !strings.Contains(first, `"success":true`) {
				t.Errorf("first reply %q is not in 1.27 style", first)
			}
			text := e.ledgerText(t)
			if got, want := strings.Count(text, "lunch"), 1; got != want {
				t.Fatalf("entries in the ledger = %d, want %d:\n%s", got, want, text)
			}
			if !strings.Contains(text, `"lunch" ^idem-k1`) {
				t.Errorf("entry without its link ^idem-k1:\n%s", text)
			}
			if got, want := e.front.calls.Load(), int32(1); got != want {
				t.Errorf("add_entries calls at Fava = %d, want %d", got, want)
			}
		})
	}
}

func TestAddEntriesSameKeyConcurrent(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	e.start(t, Options{})
	e.front.delay.Store(int64(20 * time.Millisecond))
	statuses, bodies := putConcurrently(t, []string{e.url}, 32, "k-conc", entriesBody(txn("concurrent")))
	checkOneWinner(t, statuses, bodies)
	if got, want := strings.Count(e.ledgerText(t), "concurrent"), 1; got != want {
		t.Fatalf("entries in the ledger = %d, want %d", got, want)
	}
}

// putConcurrently sends n copies of body with key from n users at once,
// spread over urls, and returns the statuses and bodies.
func putConcurrently(tb testing.TB, urls []string, n int, key, body string) ([]int, []string) {
	tb.Helper()
	statuses, bodies := make([]int, n), make([]string, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			resp, b := putEntries(tb, urls[i%len(urls)], "alice", key, body)
			statuses[i], bodies[i] = resp.StatusCode, b
			if resp.StatusCode == http.StatusConflict && resp.Header.Get("Retry-After") == "" {
				tb.Errorf("409 without Retry-After")
			}
		})
	}
	close(start)
	wg.Wait()
	// Connections the client dialed but never used look new to the
	// server, which then waits 5 s for them on shutdown.
	noRedirect.CloseIdleConnections()
	return statuses, bodies
}

// checkOneWinner checks that every answer is a 200 with the same body or a
// 409 (the key in flight), and that there is at least one 200.
func checkOneWinner(tb testing.TB, statuses []int, bodies []string) {
	tb.Helper()
	var first string
	for i, st := range statuses {
		switch st {
		case http.StatusOK:
			if first == "" {
				first = bodies[i]
			} else if bodies[i] != first {
				tb.Errorf("reply %d = %q, want the first reply %q", i, bodies[i], first)
			}
		case http.StatusConflict:
		default:
			tb.Errorf("reply %d: status %d (%s), want 200 or 409", i, st, bodies[i])
		}
	}
	if first == "" {
		tb.Errorf("no request succeeded: %v", statuses)
	}
}

func TestAddEntriesClientGivesUpAndRetries(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	// Fava holds the write until the test lets it go, so the client
	// surely gives up and the retry surely comes while Fava writes.
	e.front.arrived = make(chan struct{}, 1) // before the server runs
	e.front.hold = make(chan struct{})
	t.Cleanup(func() { close(e.front.hold) }) // before the emulator stops
	e.start(t, Options{})
	body := entriesBody(txn("sluggish"))

	// The client gives up once Fava has the write: the write completes
	// without its client.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-e.front.arrived
		cancel()
	}()
	req, _ := http.NewRequestWithContext(ctx, "PUT", e.url, strings.NewReader(body))
	req.Header.Set("Idempotency-Key", "k-slow")
	req.Header.Set("Authorization", basicAuth("alice"))
	if resp, err := noRedirect.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("status %d, want the client to give up", resp.StatusCode)
	}
	cancel()
	// The retry: 409 while the first one is still being written, then
	// the first one's answer.
	if resp, got := putEntries(t, e.url, "alice", "k-slow", body); resp.StatusCode != http.StatusConflict || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("retry while Fava writes: status=%d Retry-After=%q body %s, want 409 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), got)
	}
	e.front.hold <- struct{}{}
	var resp *http.Response
	var got string
	waitFor(t, "a retry that is not 409", func() bool {
		resp, got = putEntries(t, e.url, "alice", "k-slow", body)
		return resp.StatusCode != http.StatusConflict
	})
	if resp.StatusCode != http.StatusOK || resp.Header.Get(ledger.ReplayedHeader) != "true" {
		t.Fatalf("retry: status=%d replayed=%q body %s, want a 200 replay", resp.StatusCode, resp.Header.Get(ledger.ReplayedHeader), got)
	}
	if n := strings.Count(e.ledgerText(t), "sluggish"); n != 1 {
		t.Fatalf("entries in the ledger = %d, want 1", n)
	}
	if got, want := e.front.calls.Load(), int32(1); got != want {
		t.Errorf("add_entries calls at Fava = %d, want %d", got, want)
	}
}

func TestAddEntriesKeyMismatch(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	e.start(t, Options{})
	if resp, body := putEntries(t, e.url, "alice", "k-m", entriesBody(txn("first"))); resp.StatusCode != http.StatusOK {
		t.Fatalf("status=%d %s", resp.StatusCode, body)
	}
	before := e.ledgerText(t)
	t.Run("DifferentBody", func(t *testing.T) {
		resp, body := putEntries(t, e.url, "alice", "k-m", entriesBody(txn("second")))
		if got, want := resp.StatusCode, http.StatusUnprocessableEntity; got != want {
			t.Fatalf("status=%d, want %d; %s", got, want, body)
		}
		jsonBody(t, resp, body)
	})
	t.Run("OtherUser", func(t *testing.T) {
		resp, body := putEntries(t, e.url, "bob", "k-m", entriesBody(txn("first")))
		if got, want := resp.StatusCode, http.StatusUnprocessableEntity; got != want {
			t.Fatalf("status=%d, want %d; %s", got, want, body)
		}
		if strings.Contains(body, "Stored") {
			t.Errorf("body %q gives away the other user's reply", body)
		}
	})
	if after := e.ledgerText(t); after != before {
		t.Fatalf("ledger changed:\n%s", after)
	}
	if got, want := e.front.calls.Load(), int32(1); got != want {
		t.Errorf("add_entries calls at Fava = %d, want %d", got, want)
	}
}

func TestAddEntriesKeyLookalikesDoNotCount(t *testing.T) {
	extra := `
; ^k1 in a comment
2024-02-01 * "mentions ^k1 in a string"
  Expenses:Food    1 USD
  Assets:Bank

2024-02-02 * "other key" ^k10
  idempotency-key: "k1x"
  Expenses:Food    1 USD
  Assets:Bank
`
	e := newAddEnv(t, favatest.Style130, extra)
	e.start(t, Options{})
	resp, body := putEntries(t, e.url, "alice", "k1", entriesBody(txn("real one")))
	if resp.StatusCode != http.StatusOK || resp.Header.Get(ledger.ReplayedHeader) != "" {
		t.Fatalf("status=%d replayed=%q %s, want a fresh write", resp.StatusCode, resp.Header.Get(ledger.ReplayedHeader), body)
	}
	if n := strings.Count(e.ledgerText(t), "real one"); n != 1 {
		t.Fatalf("entries = %d, want 1", n)
	}
}

func TestAddEntriesBalanceAndNoteDedupe(t *testing.T) {
	for _, style := range styles {
		t.Run(style, func(t *testing.T) {
			e := newAddEnv(t, style, "")
			e.start(t, Options{})
			body := entriesBody(
				`{"t":"Balance","date":"2024-06-03","meta":{},"account":"Assets:Bank","amount":{"number":"100.00","currency":"USD"}}`,
				`{"t":"Note","date":"2024-06-04","meta":{},"account":"Assets:Bank","comment":"called the bank"}`)
			for i := range 3 {
				resp, b := putEntries(t, e.url, "alice", "k-bn", body)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d: status=%d %s", i, resp.StatusCode, b)
				}
				if got, want := resp.Header.Get(ledger.ReplayedHeader) == "true", i > 0; got != want {
					t.Errorf("request %d: replayed=%v, want %v", i, got, want)
				}
			}
			text := e.ledgerText(t)
			if strings.Count(text, "balance Assets:Bank") != 1 || strings.Count(text, "called the bank") != 1 {
				t.Fatalf("want one balance and one note:\n%s", text)
			}
			if got, want := strings.Count(text, `idempotency-key: "idem-k-bn"`), 2; got != want {
				t.Errorf("metadata lines = %d, want %d:\n%s", got, want, text)
			}
		})
	}
}

// TestAddEntriesKeyFoundOnlyInLedger pins a silent non-write: a key equal
// to a link already in the ledger (one other users wrote without a key)
// was answered "Stored 1 entries." as a replay, and nothing was written.
// Keys become links with a prefix (idempotency.prefix, "idem-"), so a
// user's own link does not collide; a prefixed link favaproxy has no
// record of is refused with 409, and nothing is written.
func TestAddEntriesKeyFoundOnlyInLedger(t *testing.T) {
	extra := `
2024-02-01 * "a user's own link" ^k-ext
  Expenses:Food    1 USD
  Assets:Bank

2024-02-02 * "written by a script with favaproxy's prefix" ^idem-k-script
  Expenses:Food    1 USD
  Assets:Bank
`
	e := newAddEnv(t, favatest.Style127, extra)
	e.start(t, Options{})
	resp, body := putEntries(t, e.url, "alice", "k-ext", entriesBody(txn("mine")))
	if resp.StatusCode != http.StatusOK || resp.Header.Get(ledger.ReplayedHeader) != "" {
		t.Fatalf("key equal to a user's link: status=%d replayed=%q %s, want a fresh write", resp.StatusCode, resp.Header.Get(ledger.ReplayedHeader), body)
	}
	if !strings.Contains(e.ledgerText(t), `"mine" ^idem-k-ext`) {
		t.Fatalf("the entry is not written with its prefixed link:\n%s", e.ledgerText(t))
	}
	resp, body = putEntries(t, e.url, "alice", "k-script", entriesBody(txn("anything")))
	if resp.StatusCode != http.StatusConflict || resp.Header.Get(ledger.ReplayedHeader) != "" {
		t.Fatalf("key found only in the ledger: status=%d replayed=%q %s, want 409", resp.StatusCode, resp.Header.Get(ledger.ReplayedHeader), body)
	}
	if e.front.calls.Load() != 1 || strings.Contains(e.ledgerText(t), "anything") {
		t.Fatal("the refused request was written")
	}
}

func TestAddEntriesRefusedBeforeAnyLock(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	lk := ledger.NewRWLock()
	e.start(t, sharedLock(lk))
	release, err := lk.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer release() // a request that waited for it would time out, not 400
	for _, tc := range []struct {
		name, key, body, field string
	}{
		{"NewlineInNarration", "", entriesBody(txn("a\n2024-01-01 open Assets:Evil")), "entries[0].narration"},
		{"BadAccount", "", strings.Replace(entriesBody(txn("x")), "Expenses:Food", `Expenses:Food\n2024-01-01 open Assets:Evil`, 1), "entries[0].postings[0].account"},
		{"NotJSON", "", `{"entries":`, ""},
		{"BadKey", "bad key!", entriesBody(txn("x")), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "PUT", e.url, strings.NewReader(tc.body))
			req.Header.Set("Authorization", basicAuth("alice"))
			if tc.key != "" {
				req.Header.Set("Idempotency-Key", tc.key)
			}
			resp, err := noRedirect.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if got, want := resp.StatusCode, http.StatusBadRequest; got != want {
				t.Fatalf("status=%d, want %d; %s", got, want, b)
			}
			m := jsonBody(t, resp, string(b))
			if tc.field != "" && m["field"] != tc.field {
				t.Errorf("field=%v, want %s", m["field"], tc.field)
			}
		})
	}
	if e.front.calls.Load() != 0 {
		t.Fatal("Fava saw a refused request")
	}
	if got := e.ledgerText(t); got != addLedger {
		t.Fatalf("ledger changed:\n%s", got)
	}
}

// queueBehindLock holds lk while requests from different users queue up
// for the ledger one after the other (so that their arrival order is
// known), then releases it and returns the answers in arrival order.
func queueBehindLock(t *testing.T, e *addEnv, lk ledger.Locker, bodies []string) ([]*http.Response, []string) {
	t.Helper()
	release, err := lk.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	l := e.p.bySlug[testSlug]
	resps, got := make([]*http.Response, len(bodies)), make([]string, len(bodies))
	var wg sync.WaitGroup
	for i, body := range bodies {
		wg.Go(func() {
			resps[i], got[i] = putEntries(t, e.url, fmt.Sprint("user", i), "", body)
		})
		waitFor(t, "the request to queue", func() bool { return l.QueuedAdds() == i+1 })
	}
	release()
	wg.Wait()
	return resps, got
}

func TestGroupCommit(t *testing.T) {
	const n = 16
	bodies := make([]string, n)
	for i := range bodies {
		var es []string
		for j := range i%3 + 1 {
			es = append(es, txn(fmt.Sprintf("r%02d-e%d", i, j)))
		}
		bodies[i] = entriesBody(es...)
	}
	for _, tc := range []struct {
		name     string
		disabled bool
	}{{"Batched", false}, {"Disabled", true}} {
		for _, style := range styles {
			t.Run(tc.name+"/"+style, func(t *testing.T) {
				e := newAddEnv(t, style, "")
				e.cfg.Batch.Disabled = tc.disabled
				lk := ledger.NewRWLock()
				e.start(t, sharedLock(lk))
				resps, got := queueBehindLock(t, e, lk, bodies)
				for i, resp := range resps {
					if resp.StatusCode != http.StatusOK {
						t.Fatalf("request %d: status=%d %s", i, resp.StatusCode, got[i])
					}
					if want := fmt.Sprintf("Stored %d entries.", i%3+1); !strings.Contains(got[i], want) {
						t.Errorf("request %d: body %q, want %q", i, got[i], want)
					}
				}
				calls := e.front.calls.Load()
				if tc.disabled && calls != n {
					t.Errorf("add_entries calls at Fava = %d, want %d (one per request)", calls, n)
				}
				if !tc.disabled && calls > 2 {
					t.Errorf("add_entries calls at Fava = %d, want at most 2 for %d requests", calls, n)
				}
				checkJournal(t, e, n, tc.disabled)
				text := e.ledgerText(t)
				last := -1
				for i := range n {
					for j := range i%3 + 1 {
						at := strings.Index(text, fmt.Sprintf("r%02d-e%d", i, j))
						if at < 0 || at < last {
							t.Fatalf("entry r%02d-e%d missing or out of arrival order:\n%s", i, j, text)
						}
						last = at
					}
				}
			})
		}
	}
}

// checkJournal checks that the ledger's journal holds one ok record per
// request, each with its entry count, its batch size and the main file's
// checksums before and after.
func checkJournal(t *testing.T, e *addEnv, n int, alone bool) {
	t.Helper()
	var recs []journal.Record
	err := journal.Read(journal.Path(e.cfg.Ledgers[0].StatePath(), e.file), journal.Filter{}, func(r journal.Record) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n {
		t.Fatalf("journal records = %d, want %d", len(recs), n)
	}
	for i, r := range recs {
		if r.Outcome != journal.OutcomeOK || r.Status != http.StatusOK || r.Entries != i%3+1 || r.Route != "add_entries" {
			t.Errorf("record %d = %+v, want ok, 200, %d entries", i, r, i%3+1)
		}
		if alone && r.Batch != 1 || !alone && r.Batch < 2 {
			t.Errorf("record %d: batch=%d", i, r.Batch)
		}
		if len(r.Files) != 1 || r.Files[0].Before == "" || r.Files[0].Before == r.Files[0].After {
			t.Errorf("record %d: files %+v, want the main file's checksums before and after", i, r.Files)
		}
	}
}

func TestGroupCommitRefusedRequestFailsAlone(t *testing.T) {
	for _, style := range styles {
		t.Run(style, func(t *testing.T) {
			e := newAddEnv(t, style, "")
			lk := ledger.NewRWLock()
			e.start(t, sharedLock(lk))
			bodies := []string{
				entriesBody(txn("good-0")), entriesBody(txn("good-1")),
				entriesBody(txn(refuseMarker)),
				entriesBody(txn("good-3")), entriesBody(txn("good-4")),
			}
			resps, got := queueBehindLock(t, e, lk, bodies)
			for i, resp := range resps {
				ok := !strings.Contains(got[i], `"error"`)
				if got, want := ok, i != 2; got != want {
					t.Errorf("request %d: success=%v, want %v (status %d)", i, got, want, resp.StatusCode)
				}
			}
			if style == favatest.Style130 && resps[2].StatusCode != http.StatusInternalServerError {
				t.Errorf("refused request: status %d, want Fava's 500", resps[2].StatusCode)
			}
			text := e.ledgerText(t)
			for _, s := range []string{"good-0", "good-1", "good-3", "good-4"} {
				if strings.Count(text, s) != 1 {
					t.Errorf("%s not in the ledger once:\n%s", s, text)
				}
			}
			if strings.Contains(text, refuseMarker) {
				t.Errorf("refused entry in the ledger")
			}
		})
	}
}

func TestAddEntriesReplayAfterRestart(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	body := entriesBody(txn("before restart"))
	var first string
	t.Run("First", func(t *testing.T) {
		e.start(t, Options{})
		var resp *http.Response
		resp, first = putEntries(t, e.url, "alice", "k-r", body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status=%d %s", resp.StatusCode, first)
		}
	}) // the first server stops here
	e.start(t, Options{})
	resp, got := putEntries(t, e.url, "alice", "k-r", body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get(ledger.ReplayedHeader) != "true" || got != first {
		t.Fatalf("status=%d replayed=%q body %q, want a replay of %q", resp.StatusCode, resp.Header.Get(ledger.ReplayedHeader), got, first)
	}
	if n := strings.Count(e.ledgerText(t), "before restart"); n != 1 {
		t.Fatalf("entries = %d, want 1", n)
	}
}

func TestAddEntriesKeyAcrossTwoServers(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	e.front.delay.Store(int64(10 * time.Millisecond))
	fileLock := func(lc config.Ledger, _ lock.EtcdHooks) (ledger.Locker, error) { return lock.New(lc.LockPath()), nil }
	e.start(t, Options{NewLocker: fileLock})
	urlA := e.url
	e.start(t, Options{NewLocker: fileLock})
	urlB := e.url
	statuses, bodies := putConcurrently(t, []string{urlA, urlB}, 32, "k-two", entriesBody(txn("two servers")))
	checkOneWinner(t, statuses, bodies)
	if n := strings.Count(e.ledgerText(t), "two servers"); n != 1 {
		t.Fatalf("entries = %d, want 1", n)
	}
}

func TestAddEntriesPartialWriteIs409(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	e.start(t, Options{})
	body := entriesBody(txn("part-a"), txn("part-b"))
	if resp, b := putEntries(t, e.url, "alice", "k-p", body); resp.StatusCode != http.StatusOK {
		t.Fatalf("status=%d %s", resp.StatusCode, b)
	}
	// Cut the second entry, as a crash between Fava's one-by-one writes
	// would.
	text := e.ledgerText(t)
	cut := strings.Index(text, "\n2024-06-01 * \"part-b\"")
	if cut < 0 {
		t.Fatalf("no part-b:\n%s", text)
	}
	if err := os.WriteFile(e.file, []byte(text[:cut+1]), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, b := putEntries(t, e.url, "alice", "k-p", body)
	if got, want := resp.StatusCode, http.StatusConflict; got != want {
		t.Fatalf("status=%d, want %d; %s", got, want, b)
	}
	m := jsonBody(t, resp, b)
	if m["sent"] != 2.0 || m["found"] != 1.0 {
		t.Errorf("body %s, want sent 2 and found 1", b)
	}
	if !strings.Contains(e.p.Log.String(), "level=ERROR") {
		t.Error("a partial write was not logged at error level")
	}
	if strings.Contains(e.ledgerText(t), "part-b") {
		t.Error("the request was written again")
	}
}

// TestAddEntriesTimeoutNotResent: when Fava does not answer in time the
// write is not resent; a keyed request is answered from the ledger (504
// while nothing is there), a retry right after is held off with 503 (Fava
// may still write the first attempt), and a retry once Fava has written is
// a replay. With the rollback journal, the files are not touched while the
// request may still run at Fava (timeouts.upstream after favaproxy gave
// up); after that, the keyed write Fava finished is kept (complete) and the
// unkeyed one, which nothing can show complete, is rolled back, so a
// client that retries it without a key does not store it twice.
func TestAddEntriesTimeoutNotResent(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "NoRollback", true: "Rollback"}[durable], func(t *testing.T) {
			testTimeoutNotResent(t, durable)
		})
	}
}

func testTimeoutNotResent(t *testing.T, durable bool) {
	e := newAddEnv(t, favatest.Style130, "")
	// Fava holds each write until the test lets it go, so the retry below
	// meets an attempt Fava has not written yet however slow the machine
	// is; the hold-off lasts Timeouts.Upstream, long enough for a retry
	// sent right after the 504 on a loaded machine.
	e.cfg.Timeouts.Upstream = 500 * time.Millisecond
	e.cfg.Durability.Disabled = !durable
	e.cfg.Durability.Quiet = 50 * time.Millisecond
	e.front.hold = make(chan struct{})
	t.Cleanup(func() { close(e.front.hold) }) // before the emulator stops
	e.start(t, Options{})
	for _, tc := range []struct{ key, narration string }{{"k-t", "late-keyed"}, {"", "late-plain"}} {
		resp, b := putEntries(t, e.url, "alice", tc.key, entriesBody(txn(tc.narration)))
		if durable && resp.StatusCode == http.StatusServiceUnavailable {
			// The first attempt's rollback waits out its deadline.
			resp, b = retryWhile503(t, e.url, tc.key, entriesBody(txn(tc.narration)))
		}
		if got, want := resp.StatusCode, http.StatusGatewayTimeout; got != want {
			t.Fatalf("%s: status=%d, want %d; %s", tc.narration, got, want, b)
		}
		if tc.key != "" {
			// Retried at once, while Fava may still write the first
			// attempt: held off, not sent.
			resp, b := putEntries(t, e.url, "alice", tc.key, entriesBody(txn(tc.narration)))
			if got, want := resp.StatusCode, http.StatusServiceUnavailable; got != want || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("immediate retry: status=%d Retry-After=%q, want %d with Retry-After; %s", got, resp.Header.Get("Retry-After"), want, b)
			}
		}
		e.front.hold <- struct{}{} // Fava writes the attempt that got no answer
		waitFor(t, "Fava to write "+tc.narration, func() bool {
			return strings.Contains(e.ledgerText(t), tc.narration)
		})
	}
	resp, b := putEntries(t, e.url, "alice", "k-t", entriesBody(txn("late-keyed")))
	if durable && resp.StatusCode == http.StatusServiceUnavailable {
		resp, b = retryWhile503(t, e.url, "k-t", entriesBody(txn("late-keyed")))
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get(ledger.ReplayedHeader) != "true" {
		t.Fatalf("retry: status=%d replayed=%q %s, want a 200 replay", resp.StatusCode, resp.Header.Get(ledger.ReplayedHeader), b)
	}
	text := e.ledgerText(t)
	plain := 1
	if durable {
		plain = 0
	}
	if strings.Count(text, "late-keyed") != 1 || strings.Count(text, "late-plain") != plain {
		t.Fatalf("want late-keyed once and late-plain %d times:\n%s", plain, text)
	}
	if got, want := e.front.calls.Load(), int32(2); got != want {
		t.Errorf("add_entries calls at Fava = %d, want %d (nothing resent)", got, want)
	}
}

// retryWhile503 sends a keyed add_entries again while it is answered 503,
// after the Retry-After the answer asks for (at most 5 s in all).
func retryWhile503(tb testing.TB, url, key, body string) (*http.Response, string) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, b := putEntries(tb, url, "alice", key, body)
		if resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return resp, b
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestAddEntriesValidatesWithLedgerRoots(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "option \"name_assets\" \"Aktiva\"\n")
	e.start(t, Options{})
	resp, b := putEntries(t, e.url, "alice", "", entriesBody(txn("x")))
	if got, want := resp.StatusCode, http.StatusBadRequest; got != want {
		t.Fatalf("Assets:Bank with name_assets Aktiva: status=%d, want %d; %s", got, want, b)
	}
	if m := jsonBody(t, resp, b); m["field"] != "entries[0].postings[1].account" {
		t.Errorf("field=%v, want entries[0].postings[1].account", m["field"])
	}
	resp, b = putEntries(t, e.url, "alice", "", entriesBody(strings.Replace(txn("aktiva"), "Assets:Bank", "Aktiva:Bank", 1)))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Aktiva:Bank: status=%d %s", resp.StatusCode, b)
	}
}
