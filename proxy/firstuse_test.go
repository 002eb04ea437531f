package proxy

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/journal"
)

// TestAddEntriesRecoversFromMissingLedger pins a bug where the first
// add_entries' failure to read the ledger was kept for ever: a ledger file
// briefly missing (an editor saving by rename) when the first keyed
// add_entries arrived made every later add_entries 500 until a restart.
// Now that write fails alone and the same key is written once the file is
// back.
func TestAddEntriesRecoversFromMissingLedger(t *testing.T) {
	e := newAddEnv(t, favatest.Style130, "")
	e.start(t, Options{})
	aside := e.file + ".saving"
	if err := os.Rename(e.file, aside); err != nil {
		t.Fatal(err)
	}
	resp, body := putEntries(t, e.url, "alice", "k-missing", entriesBody(txn("renamed")))
	if resp.StatusCode < 500 {
		t.Fatalf("with the ledger missing: status=%d, want a 5xx; body %s", resp.StatusCode, body)
	}
	if err := os.Rename(aside, e.file); err != nil {
		t.Fatal(err)
	}
	resp, body = putEntries(t, e.url, "alice", "k-missing", entriesBody(txn("renamed")))
	if got, want := resp.StatusCode, http.StatusOK; got != want {
		t.Fatalf("with the ledger back: status=%d, want %d; body %s", got, want, body)
	}
	if got, want := strings.Count(e.ledgerText(t), "renamed"), 1; got != want {
		t.Errorf("entries in the ledger = %d, want %d", got, want)
	}
}

// TestUnknownOutcomeIsAJournalOutcome: without the rollback journal
// (durability.disabled), a keyed add_entries that Fava never answers is
// recorded with the outcome "unknown" (it used to be an error record whose
// note started with a marker), and a retry of the key within
// timeouts.upstream is held off with 503 and Retry-After. With it, the
// files are found as they were, the write is recorded as an error that
// wrote nothing, and a retry writes the entry once.
func TestUnknownOutcomeIsAJournalOutcome(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(map[bool]string{false: "NoRollback", true: "Rollback"}[durable], func(t *testing.T) {
			e := newAddEnv(t, favatest.Style130, "")
			e.front.breakAddEntries.Store(true)
			e.cfg.Durability.Disabled = !durable
			e.cfg.Durability.Quiet = 50 * time.Millisecond
			e.start(t, Options{})
			resp, body := putEntries(t, e.url, "alice", "k-lost", entriesBody(txn("lost")))
			if resp.StatusCode != http.StatusBadGateway && resp.StatusCode != http.StatusGatewayTimeout {
				t.Fatalf("status=%d, want 502 or 504; body %s", resp.StatusCode, body)
			}
			j, err := journal.Open(e.cfg.Ledgers[0].StatePath(), e.file)
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			rec, ok, err := j.Latest("idem-k-lost")
			if err != nil || !ok {
				t.Fatalf("no journal record for the key: ok=%v err=%v", ok, err)
			}
			want := journal.OutcomeUnknown
			if durable {
				want = journal.OutcomeError
			}
			if got := rec.Outcome; got != want {
				t.Errorf("outcome=%q, want %q (note %q)", got, want, rec.Note)
			}
			e.front.breakAddEntries.Store(false)
			resp, body = putEntries(t, e.url, "alice", "k-lost", entriesBody(txn("lost")))
			if !durable {
				if got, want := resp.StatusCode, http.StatusServiceUnavailable; got != want || resp.Header.Get("Retry-After") == "" {
					t.Errorf("retry: status=%d Retry-After=%q, want %d with Retry-After; body %s",
						got, resp.Header.Get("Retry-After"), want, body)
				}
				return
			}
			if got, want := resp.StatusCode, http.StatusOK; got != want {
				t.Fatalf("retry: status=%d, want %d; body %s", got, want, body)
			}
			if got, want := strings.Count(e.ledgerText(t), "^idem-k-lost"), 1; got != want {
				t.Errorf("entries in the ledger = %d, want %d", got, want)
			}
		})
	}
}
