package proxy

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/internal/ledgergen"
)

// BenchmarkDurability measures what crash safety costs a write: the same
// add_entries, one at a time, through a favaproxy with the rollback
// journal (pre-images, fsync before the answer) and through one without
// it (durability.disabled), each in front of its own emulator on its own
// copy of a generated ledger, with Fava's reload cost per transaction.
// Each iteration writes once through each, so both see the same machine
// at the same moment; x-durable is the ratio of their times (the target
// is under 1.2 at 10,000 transactions, where Fava's reload dominates).
//
//	go test -run '^$' -bench Durability -benchtime 5x ./proxy
func BenchmarkDurability(b *testing.B) {
	for _, txns := range []int{1000, 10000, 50000} {
		b.Run(fmt.Sprintf("txns=%d", txns), func(b *testing.B) {
			durable := benchProxy(b, txns, false)
			plain := benchProxy(b, txns, true)
			var tDurable, tPlain time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				benchWrite(b, durable, fmt.Sprintf("d%d", i))
				t1 := time.Now()
				benchWrite(b, plain, fmt.Sprintf("p%d", i))
				tDurable += t1.Sub(t0)
				tPlain += time.Since(t1)
			}
			b.ReportMetric(float64(tDurable.Microseconds())/float64(b.N)/1000, "ms-durable/op")
			b.ReportMetric(float64(tPlain.Microseconds())/float64(b.N)/1000, "ms-plain/op")
			b.ReportMetric(float64(tDurable)/float64(tPlain), "x-durable")
		})
	}
}

// benchProxy starts an emulator (Fava's reload cost included) on a new
// generated ledger of txns transactions and a favaproxy in front of it,
// and returns the ledger's add_entries URL.
func benchProxy(b *testing.B, txns int, disabled bool) string {
	b.Helper()
	file := filepath.Join(b.TempDir(), "main.beancount")
	if err := ledgergen.File(file, ledgergen.Options{Title: "Test Ledger", Transactions: txns, Seed: 3}); err != nil {
		b.Fatal(err)
	}
	emu, err := favatest.New(favatest.Options{Style: favatest.Style130}, file)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { emu.Close() })
	up := startUpstream(b, emu)
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.Upstream = up.URL
	cfg.Ledgers = []config.Ledger{{File: file}}
	cfg.Durability.Disabled = disabled
	cfg.Timeouts.Upstream = 5 * time.Minute
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	p := startProxy(b, cfg, Options{Logger: discardLogger()})
	return p.URL + "/" + testSlug + "/api/add_entries"
}

func benchWrite(b *testing.B, url, narration string) {
	b.Helper()
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(entriesBody(txn(narration))))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("status %d", resp.StatusCode)
	}
}
