package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/favaproxy/favaproxy/internal/proctest"
	"github.com/favaproxy/favaproxy/internal/setcheck"
)

// writes runs the write phase: the same concurrent add_entries load straight
// to the emulator, through favaproxy with group commit and through favaproxy
// with --no-batch, each on a fresh copy of the ledger.
func (b *bench) writes(ctx context.Context) (Phase, error) {
	o := b.o
	p := Phase{Name: PhaseWrites, Title: fmt.Sprintf(
		"%d users × %d add_entries (one transaction each), %d-transaction ledger, emulator reload cost %v/transaction",
		o.Users, o.WritesPerUser, o.Transactions, o.ReloadCost)}
	setups := []struct {
		name  string
		proxy bool
		extra []string
	}{
		{"direct", false, nil},
		{"favaproxy", true, nil},
		{"favaproxy-no-batch", true, []string{"--no-batch"}},
	}
	by := map[string]Result{}
	for _, s := range setups {
		b.logf("writes: %s", s.name)
		res, err := b.writeRun(ctx, s.name, s.proxy, s.extra)
		if err != nil {
			if ctx.Err() != nil {
				return p, ctx.Err()
			}
			// One setup that cannot run (say, a favaproxy without
			// --no-batch) leaves the others worth reporting.
			p.Notes = append(p.Notes, fmt.Sprintf("%s did not run: %v", s.name, err))
			continue
		}
		by[s.name] = res
		p.Results = append(p.Results, res)
	}
	if len(p.Results) == 0 {
		return p, fmt.Errorf("no setup ran: %s", strings.Join(p.Notes, "; "))
	}
	direct, okD := by["direct"]
	if batch, ok := by["favaproxy"]; ok && okD {
		p.Checks = append(p.Checks,
			atLeast("writes/s favaproxy ÷ direct", ratio(batch.PerSecond, direct.PerSecond), 8),
			atMost("p50 favaproxy ÷ direct", ratio(batch.P50Ms, direct.P50Ms), 0.2))
	}
	if noBatch, ok := by["favaproxy-no-batch"]; ok && okD {
		p.Checks = append(p.Checks, reported("writes/s favaproxy-no-batch ÷ direct", ratio(noBatch.PerSecond, direct.PerSecond)))
	}
	lost := 0
	for _, r := range p.Results {
		lost += r.Lost + r.Duplicated
	}
	p.Checks = append(p.Checks, equal("lost + duplicated writes", float64(lost), 0))
	return p, nil
}

// writeRun runs one setup of the write phase on a fresh ledger.
func (b *bench) writeRun(ctx context.Context, setup string, proxy bool, extra []string) (Result, error) {
	ledger, err := b.ledger("writes-"+setup, b.o.Transactions)
	if err != nil {
		return Result{}, err
	}
	emu, err := b.emulator(ledger, b.o.ReloadCost)
	if err != nil {
		return Result{}, err
	}
	defer b.stop(emu, "writes-"+setup+"-fakefava")
	target := emu.URL()
	var px *proctest.Proc
	if proxy {
		if px, err = b.proxy(emu.URL(), ledger, extra...); err != nil {
			return Result{}, err
		}
		defer b.stop(px, "writes-"+setup+"-favaproxy")
		target = px.URL()
	}

	wl := newWriteLoad(target, b.slug, "fb-"+setup)
	start := time.Now()
	var wg sync.WaitGroup
	for u := range b.o.Users {
		wg.Go(func() {
			for n := range b.o.WritesPerUser {
				if ctx.Err() != nil {
					return
				}
				wl.write(ctx, u, n)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	res := wl.result(setup, time.Since(start))
	if px != nil {
		if res.PeakRSSKiB, err = peakRSSKiB(px.Cmd.Process.Pid); err != nil {
			return res, err
		}
	}
	if err := wl.count(ledger, &res); err != nil {
		return res, err
	}
	var notes []string
	if px != nil {
		if calls, requests, ok := batchStats(ctx, px.URL()); ok && calls > 0 {
			notes = append(notes, fmt.Sprintf("%d requests in %d upstream add_entries calls, %.1f per call (favaproxy /metrics)",
				int(requests), int(calls), requests/calls))
		}
	}
	if res.Failed > 0 {
		notes = append(notes, wl.firstErr())
	}
	res.Note = strings.Join(notes, "; ")
	return res, nil
}

// batchStats reads favaproxy's batch_size histogram from /metrics: the
// number of upstream add_entries calls and the client requests they
// carried. ok is false when favaproxy does not export it.
func batchStats(ctx context.Context, base string) (calls, requests float64, ok bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, 0, false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, false
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, 0, false
	}
	return parseBatchStats(string(body))
}

// parseBatchStats sums favaproxy_batch_size_count and _sum over every
// label set of a Prometheus text exposition.
func parseBatchStats(text string) (calls, requests float64, ok bool) {
	var seenCount, seenSum bool
	for line := range strings.Lines(text) {
		name, rest, found := strings.Cut(strings.TrimSpace(line), " ")
		if !found || strings.HasPrefix(name, "#") {
			continue
		}
		name, _, _ = strings.Cut(name, "{")
		var v float64
		if _, err := fmt.Sscan(strings.TrimSpace(rest), &v); err != nil {
			continue
		}
		switch name {
		case "favaproxy_batch_size_count":
			calls += v
			seenCount = true
		case "favaproxy_batch_size_sum":
			requests += v
			seenSum = true
		}
	}
	return calls, requests, seenCount && seenSum
}

// writeLoad sends add_entries requests, one transaction with a unique link
// each, and remembers which were acknowledged.
type writeLoad struct {
	client *http.Client
	url    string
	prefix string // link prefix, unique per run

	// mu guards acked, latencies, failed and errs.
	mu        sync.Mutex
	acked     []string
	latencies []time.Duration
	failed    int
	errs      []string
}

func newWriteLoad(base, slug, prefix string) *writeLoad {
	return &writeLoad{
		client: &http.Client{
			Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
			Timeout:   5 * time.Minute,
		},
		url:    base + "/" + slug + "/api/add_entries",
		prefix: prefix,
	}
}

// link returns the link of user u's n-th write.
func (w *writeLoad) link(u, n int) string { return fmt.Sprintf("%s-u%02d-w%03d", w.prefix, u, n) }

// write sends user u's n-th write as HTTP Basic user "user<u>" and records
// the outcome.
func (w *writeLoad) write(ctx context.Context, u, n int) {
	link := w.link(u, n)
	lat, err := w.send(ctx, fmt.Sprintf("user%02d", u), link)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.failed++
		w.errs = append(w.errs, err.Error())
		return
	}
	w.acked = append(w.acked, link)
	w.latencies = append(w.latencies, lat)
}

// send performs one add_entries request and returns its latency, or why it
// was not acknowledged.
func (w *writeLoad) send(ctx context.Context, user, link string) (time.Duration, error) {
	body, err := json.Marshal(addEntries(link))
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, w.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(user, "bench")
	start := time.Now()
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, err
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	lat := time.Since(start)
	if err != nil {
		return 0, err
	}
	if err := storedReply(resp.StatusCode, data); err != nil {
		return 0, err
	}
	return lat, nil
}

// storedReply accepts Fava's answer to a successful add_entries in either
// wire style: 200 with data "Stored N entries." (and success true, if
// present).
func storedReply(status int, data []byte) error {
	var r struct {
		Success *bool  `json:"success"`
		Data    any    `json:"data"`
		Error   string `json:"error"`
	}
	if status != http.StatusOK || json.Unmarshal(data, &r) != nil || (r.Success != nil && !*r.Success) || r.Error != "" {
		return fmt.Errorf("status %d: %.200s", status, bytes.TrimSpace(data))
	}
	if s, _ := r.Data.(string); !strings.HasPrefix(s, "Stored ") {
		return fmt.Errorf("status %d: unexpected data %.200s", status, bytes.TrimSpace(data))
	}
	return nil
}

// addEntries is an add_entries body with one transaction carrying link.
func addEntries(link string) map[string]any {
	return map[string]any{"entries": []any{map[string]any{
		"t": "Transaction", "date": "2021-06-01", "flag": "*", "payee": "Bench",
		"narration": "load test " + link, "tags": []string{}, "links": []string{link},
		"meta": map[string]any{},
		"postings": []any{
			map[string]any{"account": "Expenses:Food:Groceries", "amount": "1.23 USD"},
			map[string]any{"account": "Assets:Cash", "amount": ""},
		},
	}}}
}

func (w *writeLoad) result(setup string, wall time.Duration) Result {
	w.mu.Lock()
	defer w.mu.Unlock()
	return Result{
		Setup:     setup,
		OK:        len(w.acked),
		Failed:    w.failed,
		Seconds:   wall.Seconds(),
		PerSecond: float64(len(w.acked)) / wall.Seconds(),
		P50Ms:     ms(percentile(w.latencies, 50)),
		P99Ms:     ms(percentile(w.latencies, 99)),
	}
}

func (w *writeLoad) firstErr() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) == 0 {
		return ""
	}
	return "first failure: " + w.errs[0]
}

// count reads the ledger and sets res.Lost (acknowledged links not in the
// file) and res.Duplicated (links of this load found more than once).
func (w *writeLoad) count(ledger string, res *Result) error {
	seen, err := setcheck.CountLinks(ledger, w.prefix+"-")
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	res.Lost, res.Duplicated = 0, 0
	for _, l := range w.acked {
		if seen[l] == 0 {
			res.Lost++
		}
	}
	for _, c := range seen {
		if c > 1 {
			res.Duplicated++
		}
	}
	return nil
}
