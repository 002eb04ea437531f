// Package loadtest measures favaproxy against the Fava emulator in one run
// and reports the results as same-run ratios, because absolute times on a
// shared machine mean little:
//
//   - writes: 16 users × 25 add_entries (one transaction with a unique link
//     each, users told apart by their HTTP Basic user name) on a
//     1,000-transaction ledger, straight to the emulator, through favaproxy
//     with group commit, and through favaproxy with --no-batch, each on a
//     fresh copy of the ledger with the emulator's reload cost at 130µs per
//     transaction (about 0.13 s per write, as measured on Fava 1.30). Every
//     acknowledged link is then looked for in the file: lost and duplicated
//     entries are counted.
//   - reads: a ledger page (income_statement) and an API GET (changed) on a
//     small ledger, straight, through favaproxy, through a bare Go
//     httputil.ReverseProxy (with favaproxy's transport and copy-buffer
//     pool), through the floors under any Go proxy (the leanest net/http
//     forwarder, and a TCP relay below HTTP) and through nginx configured
//     as a plain reverse proxy with a keepalive upstream, each proxy in its
//     own process, in front of three
//     upstreams in turn: a static Go server answering the emulator's bytes
//     (the proxies' own cost decides), the emulator with reload cost 0, and
//     the emulator burning a Fava-like CPU time per request one request at
//     a time (Fava's speed; what a proxy burns is taken from it). Besides
//     requests per second, the CPU time each proxy (and the upstream) used
//     per request, from /proc. wrk drives the load when it is installed, a
//     Go client otherwise.
//   - memory: favaproxy's peak RSS (VmHWM) at the end of each run.
//   - hostile: normal writes through favaproxy while slow-loris connections,
//     slow uploads and two 100 MiB bodies (Content-Length and chunked) are
//     open; their latency, the bodies' statuses (413 wanted) and
//     favaproxy's peak RSS.
//
// Targets are reported beside each ratio and never enforced. cmd/favabench
// is the command line.
package loadtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/internal/ledgergen"
	"github.com/favaproxy/favaproxy/internal/proctest"
)

// Import paths of the programs under test and of the baselines' server.
const (
	FakefavaPkg   = "github.com/favaproxy/favaproxy/internal/favatest/cmd/fakefava"
	FavaproxyPkg  = "github.com/favaproxy/favaproxy/cmd/favaproxy"
	BenchservePkg = "github.com/favaproxy/favaproxy/internal/loadtest/cmd/benchserve"
)

// Phase names, in the order Run runs them.
const (
	PhaseWrites  = "writes"
	PhaseReads   = "reads"
	PhaseHostile = "hostile"
	PhaseMemory  = "memory" // derived from the others, never run alone
)

// phases are the phases Run can run, in order.
var phases = []string{PhaseWrites, PhaseReads, PhaseHostile}

// ledgerTitle gives every generated ledger the same, known slug.
const ledgerTitle = "Bench Ledger"

// Options shape a run. The zero value runs the full benchmark.
type Options struct {
	// Quick shrinks every phase for a smoke test: 8 users × 2 writes, 2 s
	// read runs on 4 connections.
	Quick bool
	// Dir holds ledgers, binaries, nginx's files and, once the run is over,
	// each process's output (NAME.log). Empty means a temporary directory
	// that Run removes, logs and all.
	Dir string
	// Fakefava, Favaproxy and Benchserve are prebuilt binaries. Empty means
	// Run builds them, without the race detector, into Dir.
	Fakefava, Favaproxy, Benchserve string
	// Nginx is nginx's path. Empty means look it up on PATH and in
	// /usr/sbin; "none" skips the nginx runs.
	Nginx string
	// Wrk is wrk's path. Empty means look it up on PATH; "none" uses the
	// built-in Go client.
	Wrk string
	// Users is the number of concurrent writers. Zero means 16 (quick: 8).
	Users int
	// WritesPerUser is the add_entries calls per user. Zero means 25
	// (quick: 2).
	WritesPerUser int
	// Transactions is the size of the write ledger. Zero means 1000.
	Transactions int
	// ReloadCost is the emulator's reload cost per transaction in the write
	// and hostile phases. Zero means 130µs, about what Fava 1.30 costs.
	ReloadCost time.Duration
	// ReadDuration is the time each setup is measured per route and
	// upstream. Zero means 10 s (quick: 1 s). From 4 s on it is split into
	// two rounds that run the setups in opposite orders.
	ReadDuration time.Duration
	// ReadUpstreams are the upstreams of the read phase (UpstreamStatic,
	// UpstreamEmulator, UpstreamFavaSpeed). Empty means all (quick: static
	// and fava-speed).
	ReadUpstreams []string
	// GoMaxProcs, if set, is the GOMAXPROCS of favaproxy and of the bare
	// Go proxy in the read phase (both the same, for a fair comparison).
	// Zero leaves Go's default (the number of cores).
	GoMaxProcs int
	// RequestCost is the CPU time the fava-speed upstream burns per
	// request. Zero means 400µs: about 2,500 requests/s at most, as Fava
	// answers api/errors on a 1,000-transaction ledger.
	RequestCost time.Duration
	// ReadConnections and ReadThreads shape the read load. Zero means 16
	// connections on 2 threads, 1 thread with 2 cores or fewer (quick: 4
	// connections on 1 thread).
	ReadConnections, ReadThreads int
	// SlowLoris is the number of slow-loris connections. Zero means 200.
	SlowLoris int
	// BigBody is the size of the oversized add_entries body. Zero means
	// 100 MiB.
	BigBody int64
	// Phases lists the phases to run (PhaseWrites, PhaseReads,
	// PhaseHostile). Empty means all.
	Phases []string
	// Log receives progress lines. Nil means none.
	Log io.Writer
}

func (o Options) withDefaults() Options {
	def := func(v *int, full, quick int) {
		if *v == 0 {
			*v = full
			if o.Quick {
				*v = quick
			}
		}
	}
	def(&o.Users, 16, 8)
	def(&o.WritesPerUser, 25, 2)
	def(&o.Transactions, 1000, 1000)
	// Quick runs share CI machines with other packages' tests: a lighter
	// read load disturbs them less.
	def(&o.ReadConnections, 16, 4)
	// wrk's threads take whole cores from the servers it measures: on a
	// 2-core machine one thread leaves a core to them.
	def(&o.ReadThreads, min(2, max(1, runtime.NumCPU()/2)), 1)
	def(&o.SlowLoris, 200, 200)
	if o.ReloadCost == 0 {
		o.ReloadCost = 130 * time.Microsecond
	}
	if o.ReadDuration == 0 {
		o.ReadDuration = 10 * time.Second
		if o.Quick {
			o.ReadDuration = time.Second
		}
	}
	if len(o.ReadUpstreams) == 0 {
		o.ReadUpstreams = slices.Clone(readUpstreams)
		if o.Quick {
			o.ReadUpstreams = []string{UpstreamStatic, UpstreamFavaSpeed}
		}
	}
	if o.RequestCost == 0 {
		o.RequestCost = 400 * time.Microsecond
	}
	if o.BigBody == 0 {
		o.BigBody = 100 << 20
	}
	if len(o.Phases) == 0 {
		o.Phases = slices.Clone(phases)
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return o
}

// readRounds is the number of rounds each read run is split into: two (in
// opposite orders) unless the runs are short.
func (o Options) readRounds() int {
	if o.ReadDuration < 4*time.Second {
		return 1
	}
	return 2
}

// Report is the outcome of a run.
type Report struct {
	Date   time.Time `json:"date"`
	Cores  int       `json:"cores"`
	GOOS   string    `json:"goos"`
	GOARCH string    `json:"goarch"`
	Quick  bool      `json:"quick"`
	Phases []Phase   `json:"phases"`
}

// Phase holds one phase's measurements and the ratios derived from them.
type Phase struct {
	Name string `json:"phase"`
	// Title describes the load in one line.
	Title   string   `json:"title"`
	Results []Result `json:"results,omitempty"`
	// Memory lists favaproxy's peak RSS per run, in the memory phase.
	Memory []RSS   `json:"memory,omitempty"`
	Checks []Check `json:"checks,omitempty"`
	// Notes say what was skipped or looked wrong.
	Notes []string `json:"notes,omitempty"`
}

// Result is one setup's figures in one phase.
type Result struct {
	// Setup is "direct", "favaproxy", "favaproxy-no-batch",
	// "go-reverseproxy", "go-nethttp-floor", "go-tcp-relay" or "nginx".
	Setup string `json:"setup"`
	// Route is the path requested, for reads.
	Route string `json:"route,omitempty"`
	// Upstream is what answered the reads (UpstreamStatic, ...).
	Upstream string `json:"upstream,omitempty"`
	// OK counts requests answered with success; Failed counts the others,
	// including transport errors.
	OK     int `json:"ok"`
	Failed int `json:"failed"`
	// Lost counts acknowledged writes whose link is not in the ledger
	// afterwards; Duplicated counts links found more than once.
	Lost       int `json:"lost"`
	Duplicated int `json:"duplicated"`
	// Seconds is the wall time of the run.
	Seconds float64 `json:"seconds"`
	// PerSecond is OK requests per second of wall time.
	PerSecond float64 `json:"per_second"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	// PeakRSSKiB is favaproxy's VmHWM at the end of the run; zero when the
	// setup has no favaproxy.
	PeakRSSKiB int64  `json:"favaproxy_peak_rss_kib,omitempty"`
	Note       string `json:"note,omitempty"`
	// ProxyCPUUs is the CPU time, user and system, the proxy's processes
	// used per successful request, in microseconds (reads; zero for
	// direct). UpstreamCPUUs is the upstream's.
	ProxyCPUUs    float64 `json:"proxy_cpu_us_per_request,omitempty"`
	UpstreamCPUUs float64 `json:"upstream_cpu_us_per_request,omitempty"`

	// proxyCPU and upstreamCPU are the CPU times behind them.
	proxyCPU, upstreamCPU time.Duration
}

// RSS is favaproxy's peak resident set size in one run.
type RSS struct {
	// Run names the phase, the setup and the route.
	Run        string `json:"run"`
	PeakRSSKiB int64  `json:"peak_rss_kib"`
}

// Check is a derived figure and the target it is compared with. Checks are
// reported, never enforced: the machine's noise decides too much.
type Check struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Target string  `json:"target"`
	Met    bool    `json:"met"`
}

// reported is a figure shown without a target.
func reported(name string, v float64) Check {
	return Check{Name: name, Value: v, Target: "(reported)", Met: true}
}

func atLeast(name string, v, bound float64) Check {
	return Check{Name: name, Value: v, Target: fmt.Sprintf(">= %g", bound), Met: v >= bound}
}

func atMost(name string, v, bound float64) Check {
	return Check{Name: name, Value: v, Target: fmt.Sprintf("<= %g", bound), Met: v <= bound}
}

func below(name string, v, bound float64) Check {
	return Check{Name: name, Value: v, Target: fmt.Sprintf("< %g", bound), Met: v < bound}
}

func equal(name string, v, want float64) Check {
	return Check{Name: name, Value: v, Target: fmt.Sprintf("= %g", want), Met: v == want}
}

// bench is one run's state.
type bench struct {
	o          Options
	dir        string
	fakefava   string
	favaproxy  string
	benchserve string
	slug       string
}

// Run builds what is missing, runs the selected phases and returns the
// report. On a phase's failure it returns the phases done so far and the
// error.
func Run(ctx context.Context, o Options) (*Report, error) {
	o = o.withDefaults()
	for _, p := range o.Phases {
		if !slices.Contains(phases, p) {
			return nil, fmt.Errorf("unknown phase %q", p)
		}
	}
	for _, u := range o.ReadUpstreams {
		if !slices.Contains(readUpstreams, u) {
			return nil, fmt.Errorf("unknown read upstream %q", u)
		}
	}
	b := &bench{o: o, dir: o.Dir, fakefava: o.Fakefava, favaproxy: o.Favaproxy,
		benchserve: o.Benchserve, slug: beancount.Slugify(ledgerTitle)}
	if b.dir == "" {
		d, err := os.MkdirTemp("", "favabench-*")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		b.dir = d
	}
	if err := b.build(); err != nil {
		return nil, err
	}
	r := &Report{Date: time.Now().UTC(), Cores: runtime.NumCPU(), GOOS: runtime.GOOS,
		GOARCH: runtime.GOARCH, Quick: o.Quick}
	run := map[string]func(context.Context) (Phase, error){
		PhaseWrites:  b.writes,
		PhaseReads:   b.reads,
		PhaseHostile: b.hostile,
	}
	for _, name := range phases {
		if !slices.Contains(o.Phases, name) {
			continue
		}
		b.logf("phase %s", name)
		p, err := run[name](ctx)
		if err != nil {
			return r, fmt.Errorf("phase %s: %w", name, err)
		}
		r.Phases = append(r.Phases, p)
	}
	r.Phases = append(r.Phases, memory(r.Phases))
	return r, nil
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.o.Log, "favabench: "+format+"\n", args...)
}

// build compiles the binaries not given in the options.
func (b *bench) build() error {
	for _, t := range []struct {
		bin *string
		pkg string
	}{{&b.fakefava, FakefavaPkg}, {&b.favaproxy, FavaproxyPkg}, {&b.benchserve, BenchservePkg}} {
		if *t.bin != "" {
			continue
		}
		b.logf("building %s", t.pkg)
		bin, err := proctest.Build(b.dir, t.pkg, false)
		if err != nil {
			return err
		}
		*t.bin = bin
	}
	return nil
}

// ledger writes a generated ledger of n transactions to dir/name/ledger.beancount.
func (b *bench) ledger(name string, n int) (string, error) {
	d := filepath.Join(b.dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(d, "ledger.beancount")
	if err := ledgergen.File(path, ledgergen.Options{Title: ledgerTitle, Transactions: n, Seed: 7}); err != nil {
		return "", fmt.Errorf("generate ledger: %w", err)
	}
	return path, nil
}

// emulator starts fakefava on ledger with the given reload cost and extra
// flags.
func (b *bench) emulator(ledger string, reloadCost time.Duration, extra ...string) (*proctest.Proc, error) {
	args := append([]string{"--style", "1.30", "--listen", "127.0.0.1:0",
		"--reload-cost", durationArg(reloadCost)}, extra...)
	p, err := proctest.StartProcess(b.fakefava, append(args, ledger)...)
	if err != nil {
		return nil, fmt.Errorf("start emulator: %w", err)
	}
	return p, nil
}

// stop kills a process the run started. When the caller chose the work
// directory, the process's output is kept there as name.log.
func (b *bench) stop(p *proctest.Proc, name string) {
	p.Kill()
	if b.o.Dir != "" {
		if err := os.WriteFile(filepath.Join(b.dir, name+".log"), []byte(p.Log()), 0o644); err != nil {
			b.logf("keep the output of %s: %v", name, err)
		}
	}
}

// durationArg formats d for a command line in ASCII units ("130us", not
// time.Duration's "130µs").
func durationArg(d time.Duration) string {
	if d%time.Microsecond == 0 {
		return fmt.Sprintf("%dus", d/time.Microsecond)
	}
	return fmt.Sprintf("%dns", d)
}

// proxy starts favaproxy in front of upstream for ledger.
func (b *bench) proxy(upstream, ledger string, extra ...string) (*proctest.Proc, error) {
	return b.proxyEnv(nil, upstream, ledger, extra...)
}

// proxyEnv starts favaproxy with env added to its environment.
func (b *bench) proxyEnv(env []string, upstream, ledger string, extra ...string) (*proctest.Proc, error) {
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--upstream", upstream,
		"--ledger", ledger}, extra...)
	p, err := proctest.StartProcessEnv(env, b.favaproxy, args...)
	if err != nil {
		return nil, fmt.Errorf("start favaproxy: %w", err)
	}
	return p, nil
}

// lookPath finds a tool: "none" means skip, a given path is used as is,
// otherwise PATH and then the fallbacks are searched. It returns "" when the
// tool is absent.
func lookPath(given, name string, fallbacks ...string) string {
	switch given {
	case "none":
		return ""
	case "":
	default:
		return given
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, f := range fallbacks {
		if _, err := os.Stat(f); err == nil {
			return f
		}
	}
	return ""
}
