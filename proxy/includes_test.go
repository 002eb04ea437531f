package proxy

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/ledger"
)

// TestRefusedBatchJudgedOverAllFiles pins a bug: whether Fava wrote
// nothing of a refused batch was judged on the main file only. With an
// insert-entry option, Fava writes into an included file; when it
// refused a batch after writing its first entry there, favaproxy resent
// every request alone and stored that entry twice. Now every file is
// compared (and, with the rollback journal, the partial write is put back
// before the requests are resent).
func TestRefusedBatchJudgedOverAllFiles(t *testing.T) {
	for _, durable := range []bool{true, false} {
		t.Run(map[bool]string{true: "Rollback", false: "NoRollback"}[durable], func(t *testing.T) {
			e := newAddEnv(t, favatest.Style130, "\ninclude \"food.beancount\"\n")
			food := filepath.Join(filepath.Dir(e.file), "food.beancount")
			if err := os.WriteFile(food, []byte("2024-01-01 custom \"fava-option\" \"insert-entry\" \"Expenses:Food\"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			e.front.refuseAfterFirst = true
			e.cfg.Durability.Disabled = !durable
			lk := ledger.NewRWLock()
			e.start(t, sharedLock(lk))

			// Queue a keyed good request and a bad one behind the lock, so
			// that they go to Fava as one batch.
			release, err := lk.Lock(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			l := e.p.bySlug[testSlug]
			var wg sync.WaitGroup
			var good, bad *http.Response
			wg.Go(func() { good, _ = putEntries(t, e.url, "alice", "k-inc", entriesBody(txn("included"))) })
			waitFor(t, "the good request to queue", func() bool { return l.QueuedAdds() == 1 })
			wg.Go(func() { bad, _ = putEntries(t, e.url, "bob", "", entriesBody(txn(refuseMarker))) })
			waitFor(t, "the bad request to queue", func() bool { return l.QueuedAdds() == 2 })
			release()
			wg.Wait()

			if good.StatusCode != http.StatusOK {
				t.Errorf("good request: status %d, want 200", good.StatusCode)
			}
			if bad.StatusCode < 400 {
				t.Errorf("bad request: status %d, want a refusal", bad.StatusCode)
			}
			all := readText(t, e.file) + readText(t, food)
			if got := strings.Count(all, "^idem-k-inc"); got != 1 {
				t.Fatalf("the good entry is in the ledger %d times, want 1:\n%s", got, all)
			}
			if strings.Contains(all, refuseMarker) {
				t.Fatal("the refused entry is in the ledger")
			}
		})
	}
}

// TestKeyedRefusalAfterPartialWrite: Fava wrote the first of a keyed
// request's two entries and then refused it. Without a rollback to put the
// file back, the request and its retries are told that one of the two
// entries is in the ledger (409 partial), never that nothing was written:
// a client told so would send the written entry again under a new key.
// With the rollback, the partial write is put back and Fava's refusal is
// the answer. Either way the written entry is in the ledger at most once.
func TestKeyedRefusalAfterPartialWrite(t *testing.T) {
	for _, style := range styles {
		for _, durable := range []bool{true, false} {
			t.Run(style+map[bool]string{true: "/Rollback", false: "/NoRollback"}[durable], func(t *testing.T) {
				e := newAddEnv(t, style, "")
				e.front.refuseAfterFirst = true
				e.cfg.Durability.Disabled = !durable
				e.start(t, Options{})
				body := entriesBody(txn("part-a"), txn(refuseMarker))
				for attempt := range 2 {
					resp, b := putEntries(t, e.url, "alice", "k-part", body)
					if strings.Contains(b, "nothing was written") {
						t.Errorf("attempt %d: told %q, but part-a may be in the ledger", attempt+1, b)
					}
					switch {
					case durable && !strings.Contains(b, "Invalid amount."):
						t.Errorf("attempt %d: status %d %s, want Fava's refusal", attempt+1, resp.StatusCode, b)
					case !durable && (resp.StatusCode != http.StatusConflict || !strings.Contains(b, `"found":1`)):
						t.Errorf("attempt %d: status %d %s, want 409 with the key found on 1 entry", attempt+1, resp.StatusCode, b)
					}
				}
				want := 1
				if durable {
					want = 0
				}
				if got := strings.Count(e.ledgerText(t), "part-a"); got != want {
					t.Fatalf("part-a is in the ledger %d times, want %d:\n%s", got, want, e.ledgerText(t))
				}
			})
		}
	}
}
