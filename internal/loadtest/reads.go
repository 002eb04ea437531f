package loadtest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/favaproxy/favaproxy/internal/proctest"
)

// readLedgerSize is the number of transactions of the read phase's ledger:
// small, so that the page measures the proxies rather than the emulator.
const readLedgerSize = 100

// The upstreams the read phase measures the proxies in front of.
const (
	// UpstreamStatic is a static Go server answering the emulator's bytes:
	// as fast an upstream as the machine allows, so the proxies' own cost
	// decides.
	UpstreamStatic = "static"
	// UpstreamEmulator is the emulator with reload cost 0.
	UpstreamEmulator = "emulator"
	// UpstreamFavaSpeed is the emulator burning Options.RequestCost of CPU
	// per request, one at a time: about Fava's speed, and like Fava it
	// takes a core, so what a proxy burns is taken from it.
	UpstreamFavaSpeed = "fava-speed"
)

// readUpstreams are the read phase's upstreams, in the order it runs them.
var readUpstreams = []string{UpstreamStatic, UpstreamEmulator, UpstreamFavaSpeed}

// readSetup is one way to reach the upstream: straight or through a proxy.
type readSetup struct {
	name, base string
	// pids are the proxy's processes (none for direct), whose CPU time
	// is counted, with their children's.
	pids []int
}

// reads runs the read phase: for each upstream, a ledger page and an API
// GET, straight, through favaproxy, through a bare Go reverse proxy and
// through nginx, with the CPU time each proxy takes per request.
func (b *bench) reads(ctx context.Context) (Phase, error) {
	o := b.o
	wrk := lookPath(o.Wrk, "wrk")
	client := "wrk"
	if wrk == "" {
		client = "Go client"
	}
	procs := "default"
	if o.GoMaxProcs > 0 {
		procs = fmt.Sprint(o.GoMaxProcs)
	}
	rounds := "one round"
	if n := o.readRounds(); n > 1 {
		rounds = fmt.Sprintf("%d rounds in opposite orders", n)
	}
	p := Phase{Name: PhaseReads, Title: fmt.Sprintf(
		"GET a ledger page and an API route, %d connections, %d threads, %v per setup in %s (%s), %d-transaction ledger; upstreams %s (fava-speed: %v of CPU per request, one at a time); Go proxies' GOMAXPROCS %s",
		o.ReadConnections, o.ReadThreads, o.ReadDuration, rounds, client, readLedgerSize,
		strings.Join(o.ReadUpstreams, ", "), o.RequestCost, procs)}
	if wrk == "" {
		p.Notes = append(p.Notes, "wrk not found: the built-in Go client measured the reads")
	}
	nginx := lookPath(o.Nginx, "nginx", "/usr/sbin/nginx")
	if nginx == "" {
		p.Notes = append(p.Notes, "nginx not found: no nginx baseline")
	}
	ledger, err := b.ledger("reads", readLedgerSize)
	if err != nil {
		return p, err
	}
	routes := []struct{ label, path string }{
		{"page", "/" + b.slug + "/income_statement/"},
		{"api", "/" + b.slug + "/api/changed"},
	}
	for _, up := range o.ReadUpstreams {
		var upstream *proctest.Proc
		switch up {
		case UpstreamStatic:
			upstream, err = b.static(ctx, ledger, routes[0].path, routes[1].path)
		case UpstreamEmulator:
			upstream, err = b.emulator(ledger, 0)
		case UpstreamFavaSpeed:
			upstream, err = b.emulator(ledger, 0, "--request-cost", durationArg(o.RequestCost))
		default:
			err = fmt.Errorf("unknown read upstream %q", up)
		}
		if err != nil {
			return p, err
		}
		err = b.readsBehind(ctx, &p, up, upstream, ledger, wrk, nginx, routes)
		b.stop(upstream, "reads-"+up)
		if err != nil {
			return p, err
		}
	}
	return p, nil
}

// readsBehind measures the read routes in front of one upstream, adding
// results and checks to p.
func (b *bench) readsBehind(ctx context.Context, p *Phase, up string, upstream *proctest.Proc, ledger, wrk, nginx string, routes []struct{ label, path string }) error {
	o := b.o
	var env []string
	if o.GoMaxProcs > 0 {
		env = []string{fmt.Sprintf("GOMAXPROCS=%d", o.GoMaxProcs)}
	}
	px, err := b.proxyEnv(env, upstream.URL(), ledger)
	if err != nil {
		return err
	}
	defer b.stop(px, "reads-"+up+"-favaproxy")
	setups := []readSetup{{name: "direct", base: upstream.URL()}, {name: "favaproxy", base: px.URL(), pids: []int{px.Cmd.Process.Pid}}}
	gp, err := b.benchserveProc(env, "proxy", upstream.URL())
	if err != nil {
		return err
	}
	defer b.stop(gp, "reads-"+up+"-go-reverseproxy")
	setups = append(setups, readSetup{name: "go-reverseproxy", base: gp.URL(), pids: []int{gp.Cmd.Process.Pid}})
	// The floors under any Go proxy: net/http's server with the least a
	// handler can do, and a relay below HTTP.
	for _, mode := range []string{"floor", "relay"} {
		fp, err := b.benchserveProc(env, mode, upstream.URL())
		if err != nil {
			return err
		}
		defer b.stop(fp, "reads-"+up+"-go-"+mode)
		setups = append(setups, readSetup{name: floorSetups[mode], base: fp.URL(), pids: []int{fp.Cmd.Process.Pid}})
	}
	if nginx != "" {
		ng, err := startNginx(ctx, nginx, b.dir, upstream.Addr)
		if err != nil {
			return err
		}
		defer ng.stop()
		setups = append(setups, readSetup{name: "nginx", base: ng.url(), pids: []int{ng.cmd.Process.Pid}})
	}
	upPid := upstream.Cmd.Process.Pid

	for _, rt := range routes {
		route := rt.path
		if status, err := probe(ctx, upstream.URL()+route); err != nil || status != http.StatusOK {
			p.Notes = append(p.Notes, fmt.Sprintf("%s: GET %s straight: status %d %v", up, route, status, err))
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
				b.logf("reads: %s %s %s (round %d of %d)", up, s.name, route, round+1, rounds)
				res, err := runRead(ctx, wrk, s, upPid, route, o.ReadThreads, o.ReadConnections, o.ReadDuration/time.Duration(rounds))
				if err != nil {
					return fmt.Errorf("%s %s %s: %w", up, s.name, route, err)
				}
				byName[s.name] = addRound(byName[s.name], res, round)
			}
		}
		for _, s := range setups {
			res := byName[s.name]
			res.Setup, res.Route, res.Upstream = s.name, route, up
			res.ProxyCPUUs = perRequestUs(res.proxyCPU, res.OK)
			res.UpstreamCPUUs = perRequestUs(res.upstreamCPU, res.OK)
			if s.name == "favaproxy" {
				if res.PeakRSSKiB, err = peakRSSKiB(px.Cmd.Process.Pid); err != nil {
					return err
				}
			}
			byName[s.name] = res
			p.Results = append(p.Results, res)
		}
		direct := byName["direct"]
		for _, name := range []string{"favaproxy", "go-reverseproxy", "go-nethttp-floor", "go-tcp-relay", "nginx"} {
			if r, ok := byName[name]; ok {
				p.Checks = append(p.Checks,
					reported(fmt.Sprintf("%s added p50, ms", name), r.P50Ms-direct.P50Ms),
					reported(fmt.Sprintf("%s CPU per request, µs", name), r.ProxyCPUUs))
			}
		}
		fp, gp := byName["favaproxy"], byName["go-reverseproxy"]
		if ng, ok := byName["nginx"]; ok {
			c := reported("requests/s favaproxy ÷ nginx", ratio(fp.PerSecond, ng.PerSecond))
			if up == UpstreamFavaSpeed {
				c = atLeast(c.Name, c.Value, 0.95)
			}
			p.Checks = append(p.Checks, c)
			for _, name := range []string{"go-reverseproxy", "go-nethttp-floor", "go-tcp-relay"} {
				p.Checks = append(p.Checks, reported("requests/s "+name+" ÷ nginx", ratio(byName[name].PerSecond, ng.PerSecond)))
			}
		}
		c := reported("requests/s favaproxy ÷ go-reverseproxy", ratio(fp.PerSecond, gp.PerSecond))
		if up == UpstreamStatic {
			c = atLeast(c.Name, c.Value, 1.0)
		}
		p.Checks = append(p.Checks, c,
			reported("CPU per request favaproxy ÷ go-reverseproxy", ratio(fp.ProxyCPUUs, gp.ProxyCPUUs)))
		for i := range p.Checks[nChecks:] {
			p.Checks[nChecks+i].Name = up + " " + rt.label + ": " + p.Checks[nChecks+i].Name
		}
	}
	return nil
}

// runRead measures one setup on one route for d, with the CPU time its
// proxy and the upstream used meanwhile.
func runRead(ctx context.Context, wrk string, s readSetup, upPid int, route string, threads, conns int, d time.Duration) (Result, error) {
	p0, err := cpuTime(s.pids...)
	if err != nil {
		return Result{}, err
	}
	u0, err := cpuTime(upPid)
	if err != nil {
		return Result{}, err
	}
	var res Result
	if wrk != "" {
		res, err = runWrk(ctx, wrk, s.base+route, threads, conns, d)
	} else {
		res, err = runGoClient(ctx, s.base+route, conns, d)
	}
	if err != nil {
		return res, err
	}
	p1, err := cpuTime(s.pids...)
	if err != nil {
		return res, err
	}
	u1, err := cpuTime(upPid)
	if err != nil {
		return res, err
	}
	res.proxyCPU, res.upstreamCPU = p1-p0, u1-u0
	return res, nil
}

// perRequestUs is cpu divided over n requests, in microseconds.
func perRequestUs(cpu time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(n)
}

// static starts the static upstream with the emulator's answers to paths,
// fetched from an emulator started for the purpose.
func (b *bench) static(ctx context.Context, ledger string, paths ...string) (*proctest.Proc, error) {
	emu, err := b.emulator(ledger, 0)
	if err != nil {
		return nil, err
	}
	defer b.stop(emu, "reads-static-source")
	args := []string{"static", "--listen", "127.0.0.1:0"}
	for i, path := range paths {
		body, ctype, err := fetch(ctx, emu.URL()+path)
		if err != nil {
			return nil, err
		}
		name := filepath.Join(b.dir, fmt.Sprintf("static-%d.json", i))
		if strings.HasPrefix(ctype, "text/html") {
			name = strings.TrimSuffix(name, ".json") + ".html"
		}
		if err := os.WriteFile(name, body, 0o644); err != nil {
			return nil, err
		}
		args = append(args, path+"="+name)
	}
	p, err := proctest.StartProcess(b.benchserve, args...)
	if err != nil {
		return nil, fmt.Errorf("start static upstream: %w", err)
	}
	return p, nil
}

// floorSetups names the read setups of benchserve's floor and relay.
var floorSetups = map[string]string{"floor": "go-nethttp-floor", "relay": "go-tcp-relay"}

// benchserveProc starts benchserve's mode (proxy, floor or relay) in front
// of upstream, with env added to its environment.
func (b *bench) benchserveProc(env []string, mode, upstream string) (*proctest.Proc, error) {
	p, err := proctest.StartProcessEnv(env, b.benchserve, mode, "--listen", "127.0.0.1:0", "--upstream", upstream)
	if err != nil {
		return nil, fmt.Errorf("start benchserve %s: %w", mode, err)
	}
	return p, nil
}

// fetch returns the body and Content-Type of a GET of url, which must
// answer 200.
func fetch(ctx context.Context, url string) ([]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return body, resp.Header.Get("Content-Type"), err
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
	sum.proxyCPU += r.proxyCPU
	sum.upstreamCPU += r.upstreamCPU
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
