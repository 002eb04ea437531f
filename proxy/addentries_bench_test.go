package proxy

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/ledger"
)

// BenchmarkAddEntriesGroupCommit is 16 writers sending add_entries (one
// transaction each, no idempotency key, as the load tool's write phase) to
// favaproxy with group commit in front of the emulator on a
// 1,000-transaction ledger whose reloads cost nothing: what remains is
// favaproxy's own cost per write plus the emulator's file rewrites. Profile
// it with -cpuprofile.
func BenchmarkAddEntriesGroupCommit(b *testing.B) {
	var extra strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&extra, "\n2024-02-01 * \"Shop\" \"txn %d\"\n  Expenses:Food  1.00 USD\n  Assets:Bank\n", i)
	}
	e := newAddEnv(b, favatest.Style130, extra.String())
	e.start(b, Options{Logger: discardLogger()})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.Cleanup(client.CloseIdleConnections)
	var n atomic.Int64
	b.ResetTimer()
	var wg sync.WaitGroup
	for u := range 16 {
		wg.Go(func() {
			for n.Add(1) <= int64(b.N) {
				req, _ := http.NewRequest(http.MethodPut, e.url, strings.NewReader(entriesBody(txn(fmt.Sprintf("u%d", u)))))
				req.Header.Set("Content-Type", "application/json")
				req.SetBasicAuth(fmt.Sprintf("user%02d", u), "pw")
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkConditionalWrite is one writer sending add_entries one after
// another to favaproxy in front of the emulator on a 1,000-transaction
// ledger: plain, with If-Match (the ETag of the previous answer), and with
// a balance requirement (one reload check and one balance query of Fava
// per write). Compare the sub-benchmarks of one run.
func BenchmarkConditionalWrite(b *testing.B) {
	var extra strings.Builder
	extra.WriteString(walletLedger)
	for i := range 1000 {
		fmt.Fprintf(&extra, "\n2024-02-01 * \"Shop\" \"txn %d\"\n  Expenses:Food  1.00 USD\n  Assets:Bank\n", i)
	}
	for _, mode := range []string{"plain", "if-match", "require"} {
		b.Run(mode, func(b *testing.B) {
			e := newAddEnv(b, favatest.Style130, extra.String())
			e.start(b, Options{Logger: discardLogger()})
			etag := "*"
			for i := 0; b.Loop(); i++ {
				h := http.Header{"Content-Type": {"application/json"}}
				switch mode {
				case "if-match":
					h.Set("If-Match", etag)
				case "require":
					h.Set(ledger.RequireHeader, "Assets:Wallet >= -1000000000 USD")
				}
				resp, body := do(b, http.MethodPut, e.url, entriesBody(withdrawal(fmt.Sprintf("w%d", i))), h)
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				etag = resp.Header.Get("ETag")
			}
		})
	}
}
