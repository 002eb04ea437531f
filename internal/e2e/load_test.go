package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/internal/favatest"
	"github.com/favaproxy/favaproxy/internal/ledgergen"
	"github.com/favaproxy/favaproxy/internal/proctest"
	"github.com/favaproxy/favaproxy/internal/setcheck"
)

const slug = "e2e-ledger"

// shape is the size of one run.
type shape struct {
	txns      int // transactions in the generated ledger
	writers   int
	perWriter int // add_entries calls per writer
	chunk     int // emulator write chunk in bytes
	pause     time.Duration
}

func runShape() shape {
	if *long {
		return shape{txns: 1000, writers: 32, perWriter: 25, chunk: 4096, pause: time.Millisecond}
	}
	return shape{txns: 200, writers: 16, perWriter: 5, chunk: 8192, pause: time.Millisecond}
}

// newLedger writes a generated ledger in a fresh directory.
func newLedger(tb testing.TB, txns int) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "main.beancount")
	if err := ledgergen.File(path, ledgergen.Options{Title: "E2E Ledger", Transactions: txns, Seed: 7}); err != nil {
		tb.Fatal(err)
	}
	return path
}

// startEmulator starts one fakefava process on ledger.
func startEmulator(tb testing.TB, ledger, trace string, sh shape) *proctest.Proc {
	tb.Helper()
	return proctest.Start(tb, bins.fakefava, "--style", favatest.Style130, "--listen", "127.0.0.1:0",
		"--write-chunk", fmt.Sprint(sh.chunk), "--write-pause", sh.pause.String(),
		"--trace", trace, ledger)
}

var client = &http.Client{Timeout: 60 * time.Second}

// entriesBody is an add_entries body with one transaction narrated
// narration and carrying links.
func entriesBody(narration string, links ...string) []byte {
	entry := map[string]any{
		"t": "Transaction", "date": "2024-06-01", "flag": "*", "payee": "E2E", "narration": narration,
		"tags": []any{}, "links": append([]string{}, links...), "meta": map[string]any{},
		"postings": []any{
			map[string]any{"account": "Expenses:Food:Groceries", "amount": "1.00 USD"},
			map[string]any{"account": "Assets:Cash", "amount": ""},
		},
	}
	body, _ := json.Marshal(map[string]any{"entries": []any{entry}})
	return body
}

// addEntry sends one add_entries with a transaction linked to id, as user
// (HTTP Basic, which Fava ignores and favaproxy takes as the identity).
func addEntry(base, user, id string) (int, string, error) {
	body := entriesBody("write "+id, id)
	req, err := http.NewRequest(http.MethodPut, base+"/"+slug+"/api/add_entries", bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if user != "" {
		req.SetBasicAuth(user, "secret")
	}
	res, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, string(b), err
}

// classify records a write's answer: 2xx is acknowledged; an answer that
// says the write never started (unknown route or slug, refused request,
// lock timeout, unresolved conflict) failed; anything else (5xx, transport
// errors) is indeterminate.
func classify(c *setcheck.Checker, id string, status int, err error) {
	switch {
	case err != nil:
		c.Indeterminate(id)
	case status >= 200 && status < 300:
		c.Ack(id)
	case status == 400, status == 404, status == 405, status == 409, status == 413, status == 503:
		c.Fail(id)
	default:
		c.Indeterminate(id)
	}
}

// writeLoad runs sh.writers writers, writer i sending to bases[i%len], and
// returns a histogram of answer statuses (0 for transport errors).
func writeLoad(tb testing.TB, c *setcheck.Checker, bases []string, sh shape) map[int]int {
	tb.Helper()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
	)
	for w := range sh.writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := bases[w%len(bases)]
			for k := range sh.perWriter {
				id := fmt.Sprintf("w-%d-%d", w, k)
				c.Attempt(id)
				status, _, err := addEntry(base, fmt.Sprintf("writer%d", w), id)
				classify(c, id, status, err)
				mu.Lock()
				statuses[status]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return statuses
}

// readLoad polls GET api/changed and a page through each base until stop is
// closed, and returns a histogram of statuses (0 for transport errors).
func readLoad(bases []string, readers int, stop <-chan struct{}) func() map[int]int {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
	)
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := bases[r%len(bases)]
			paths := []string{"/" + slug + "/api/changed", "/" + slug + "/income_statement/"}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				status := 0
				res, err := client.Get(base + paths[i%len(paths)])
				if err == nil {
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					status = res.StatusCode
				}
				mu.Lock()
				statuses[status]++
				mu.Unlock()
			}
		}()
	}
	return func() map[int]int {
		wg.Wait()
		return statuses
	}
}

func urls(procs []*proctest.Proc) []string {
	out := make([]string, len(procs))
	for i, p := range procs {
		out[i] = p.URL()
	}
	return out
}

func histogram(h map[int]int) string {
	var parts []string
	for s, n := range h {
		parts = append(parts, fmt.Sprintf("%d:%d", s, n))
	}
	return strings.Join(parts, " ")
}
