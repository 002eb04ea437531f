package loadtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"
)

// readLedgerSize is the number of transactions of the read phase's ledger:
// small, so that the page measures the proxies rather than the emulator.
const readLedgerSize = 100

// reads runs the read phase: a ledger page and an API GET, each straight to
// the emulator, through favaproxy, through a bare Go reverse proxy and
// through nginx. The emulator's reload cost is zero here and nothing
// writes, so the upstream is cheap and the differences are the proxies' own
// cost.
func (b *bench) reads(ctx context.Context) (Phase, error) {
	o := b.o
	wrk := lookPath(o.Wrk, "wrk")
	client := "wrk"
	if wrk == "" {
		client = "Go client"
	}
	rounds := "one round"
	if n := o.readRounds(); n > 1 {
		rounds = fmt.Sprintf("%d rounds in opposite orders", n)
	}
	p := Phase{Name: PhaseReads, Title: fmt.Sprintf(
		"GET a ledger page and an API route, %d connections, %d threads, %v per setup in %s (%s), %d-transaction ledger, emulator reload cost 0",
		o.ReadConnections, o.ReadThreads, o.ReadDuration, rounds, client, readLedgerSize)}
	if wrk == "" {
		p.Notes = append(p.Notes, "wrk not found: the built-in Go client measured the reads")
	}

	ledger, err := b.ledger("reads", readLedgerSize)
	if err != nil {
		return p, err
	}
	emu, err := b.emulator(ledger, 0)
	if err != nil {
		return p, err
	}
	defer b.stop(emu, "reads-fakefava")
	px, err := b.proxy(emu.URL(), ledger)
	if err != nil {
		return p, err
	}
	defer b.stop(px, "reads-favaproxy")
	type setup struct{ name, base string }
	setups := []setup{{"direct", emu.URL()}, {"favaproxy", px.URL()}}
	if !o.Quick { // a smoke test can do without this baseline
		gp, err := startGoProxy(emu.URL())
		if err != nil {
			return p, err
		}
		defer gp.stop()
		setups = append(setups, setup{"go-reverseproxy", gp.url()})
	}
	if bin := lookPath(o.Nginx, "nginx", "/usr/sbin/nginx"); bin == "" {
		p.Notes = append(p.Notes, "nginx not found: no nginx baseline")
	} else {
		ng, err := startNginx(ctx, bin, b.dir, emu.Addr)
		if err != nil {
			return p, err
		}
		defer ng.stop()
		setups = append(setups, setup{"nginx", ng.url()})
	}

	routes := []struct{ label, path string }{
		{"page", "/" + b.slug + "/income_statement/"},
		{"api", "/" + b.slug + "/api/changed"},
	}
	for _, rt := range routes {
		route := rt.path
		if status, err := probe(ctx, emu.URL()+route); err != nil || status != http.StatusOK {
			p.Notes = append(p.Notes, fmt.Sprintf("GET %s straight: status %d %v", route, status, err))
		}
		byName := map[string]Result{}
		nChecks := len(p.Checks)
		// Rounds alternate the order of the setups (A B C, then C B A) so
		// that a drift of the machine does not favour whichever runs first.
		rounds := o.readRounds()
		for round := range rounds {
			order := slices.Clone(setups)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, s := range order {
				b.logf("reads: %s %s (round %d of %d)", s.name, route, round+1, rounds)
				var res Result
				d := o.ReadDuration / time.Duration(rounds)
				if wrk != "" {
					res, err = runWrk(ctx, wrk, s.base+route, o.ReadThreads, o.ReadConnections, d)
				} else {
					res, err = runGoClient(ctx, s.base+route, o.ReadConnections, d)
				}
				if err != nil {
					return p, fmt.Errorf("%s %s: %w", s.name, route, err)
				}
				byName[s.name] = addRound(byName[s.name], res, round)
			}
		}
		for _, s := range setups {
			res := byName[s.name]
			res.Setup, res.Route = s.name, route
			if s.name == "favaproxy" {
				if res.PeakRSSKiB, err = peakRSSKiB(px.Cmd.Process.Pid); err != nil {
					return p, err
				}
			}
			byName[s.name] = res
			p.Results = append(p.Results, res)
		}
		direct := byName["direct"]
		for _, name := range []string{"favaproxy", "go-reverseproxy", "nginx"} {
			if r, ok := byName[name]; ok {
				p.Checks = append(p.Checks,
					reported(fmt.Sprintf("%s added p50, ms", name), r.P50Ms-direct.P50Ms),
					reported(fmt.Sprintf("%s added p99, ms", name), r.P99Ms-direct.P99Ms))
			}
		}
		fp := byName["favaproxy"]
		gp, haveGP := byName["go-reverseproxy"]
		if ng, ok := byName["nginx"]; ok {
			p.Checks = append(p.Checks, atLeast("requests/s favaproxy ÷ nginx", ratio(fp.PerSecond, ng.PerSecond), 0.9))
			if haveGP {
				p.Checks = append(p.Checks, reported("requests/s go-reverseproxy ÷ nginx", ratio(gp.PerSecond, ng.PerSecond)))
			}
		}
		if haveGP {
			p.Checks = append(p.Checks, reported("requests/s favaproxy ÷ go-reverseproxy", ratio(fp.PerSecond, gp.PerSecond)))
		}
		for i := range p.Checks[nChecks:] {
			p.Checks[nChecks+i].Name = rt.label + ": " + p.Checks[nChecks+i].Name
		}
	}
	return p, nil
}

// addRound folds the round-th run r into the sum of the earlier rounds:
// counts and times add up, requests per second follow from them, and the
// percentiles are the mean of the rounds' (wrk reports no samples to merge).
func addRound(sum, r Result, round int) Result {
	n := float64(round)
	sum.OK += r.OK
	sum.Failed += r.Failed
	sum.Seconds += r.Seconds
	sum.PerSecond = ratio(float64(sum.OK), sum.Seconds)
	sum.P50Ms = (sum.P50Ms*n + r.P50Ms) / (n + 1)
	sum.P99Ms = (sum.P99Ms*n + r.P99Ms) / (n + 1)
	return sum
}

// probe returns the status of one GET.
func probe(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// runWrk runs wrk against url and parses its report.
func runWrk(ctx context.Context, bin, url string, threads, conns int, d time.Duration) (Result, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, bin, fmt.Sprintf("-t%d", threads), fmt.Sprintf("-c%d", max(conns, threads)),
		fmt.Sprintf("-d%ds", secs), "--latency", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return Result{}, fmt.Errorf("wrk: %w\n%s", err, out)
	}
	return parseWrk(string(out))
}

// parseWrk reads wrk's --latency report: total requests, Requests/sec, the
// 50% and 99% latencies, non-2xx/3xx responses and socket errors.
func parseWrk(out string) (Result, error) {
	var res Result
	var total int
	var seenRPS, seen50, seen99, seenTotal bool
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "Requests/sec:":
			if _, err := fmt.Sscan(f[1], &res.PerSecond); err != nil {
				return res, fmt.Errorf("wrk Requests/sec %q: %w", f[1], err)
			}
			seenRPS = true
		case len(f) == 2 && f[0] == "50%":
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return res, err
			}
			res.P50Ms, seen50 = ms(d), true
		case len(f) == 2 && f[0] == "99%":
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return res, err
			}
			res.P99Ms, seen99 = ms(d), true
		case len(f) >= 5 && f[1] == "requests" && f[2] == "in":
			if _, err := fmt.Sscan(f[0], &total); err != nil {
				return res, fmt.Errorf("wrk total %q: %w", f[0], err)
			}
			d, err := time.ParseDuration(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return res, fmt.Errorf("wrk duration %q: %w", f[3], err)
			}
			res.Seconds, seenTotal = d.Seconds(), true
		case strings.HasPrefix(strings.TrimSpace(line), "Non-2xx or 3xx responses:"):
			var n int
			if _, err := fmt.Sscan(f[len(f)-1], &n); err != nil {
				return res, fmt.Errorf("wrk non-2xx %q: %w", line, err)
			}
			res.Failed += n
		case len(f) >= 2 && f[0] == "Socket" && f[1] == "errors:":
			// Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				var n int
				if _, err := fmt.Sscan(strings.TrimSuffix(f[i+1], ","), &n); err == nil {
					res.Failed += n
				}
			}
		}
	}
	if !seenRPS || !seen50 || !seen99 || !seenTotal {
		return res, fmt.Errorf("unexpected wrk output:\n%s", out)
	}
	res.OK = max(0, total-res.Failed)
	if res.Seconds > 0 {
		// Requests/sec counts failures too; count only successes.
		res.PerSecond = float64(res.OK) / res.Seconds
	}
	return res, nil
}

// parseWrkDuration parses wrk's latency figures: "312.00us", "1.25ms",
// "2.00s", "1.00m" (minutes, as in Go).
func parseWrkDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("wrk latency %q: %w", s, err)
	}
	return d, nil
}

// runGoClient keeps conns connections busy with GETs of url for d.
func runGoClient(ctx context.Context, url string, conns int, d time.Duration) (Result, error) {
	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true},
		Timeout:   30 * time.Second,
	}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		// mu guards lat, failed and firstErr.
		mu       sync.Mutex
		lat      []time.Duration
		failed   int
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range conns {
		wg.Go(func() {
			var mine []time.Duration
			bad := 0
			for ctx.Err() == nil {
				t := time.Now()
				status, err := probeWith(ctx, client, url)
				if ctx.Err() != nil {
					break
				}
				if err != nil || status >= 400 {
					bad++
					if err != nil {
						mu.Lock()
						firstErr = cmp.Or(firstErr, err)
						mu.Unlock()
					}
					continue
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			failed += bad
			mu.Unlock()
		})
	}
	wg.Wait()
	wall := time.Since(start)
	res := Result{OK: len(lat), Failed: failed, Seconds: wall.Seconds(),
		PerSecond: float64(len(lat)) / wall.Seconds(),
		P50Ms:     ms(percentile(lat, 50)), P99Ms: ms(percentile(lat, 99))}
	if len(lat) == 0 && firstErr != nil {
		return res, firstErr
	}
	return res, nil
}

func probeWith(ctx context.Context, c *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return resp.StatusCode, err
	}
	return resp.StatusCode, nil
}
