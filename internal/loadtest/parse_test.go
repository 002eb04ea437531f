package loadtest

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

const wrkOutput = `Running 2s test @ http://127.0.0.1:18777/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.95ms  793.11us   5.79ms   69.32%
    Req/Sec     0.99k   105.51     1.25k    70.00%
  Latency Distribution
     50%  312.00us
     75%    2.41ms
     90%    2.89ms
     99%    1.20s
  2000 requests in 2.00s, 3.20MB read
  Socket errors: connect 1, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:    1000.00
Transfer/sec:      3.20MB
`

func TestParseWrk(t *testing.T) {
	res, err := parseWrk(wrkOutput)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := res.P50Ms, 0.312; got != want {
		t.Errorf("P50Ms=%v, want %v", got, want)
	}
	if got, want := res.P99Ms, 1200.0; got != want {
		t.Errorf("P99Ms=%v, want %v", got, want)
	}
	if got, want := res.Failed, 1+2+3+4; got != want {
		t.Errorf("Failed=%d, want %d", got, want)
	}
	if got, want := res.OK, 2000-10; got != want {
		t.Errorf("OK=%d, want %d", got, want)
	}
	if got, want := res.Seconds, 2.0; got != want {
		t.Errorf("Seconds=%v, want %v", got, want)
	}
	if got, want := res.PerSecond, 995.0; got != want {
		t.Errorf("PerSecond=%v, want %v (successes only)", got, want)
	}
}

func TestParseWrkRejectsOtherOutput(t *testing.T) {
	if _, err := parseWrk("unable to connect to 127.0.0.1:1 Connection refused\n"); err == nil {
		t.Fatal("no error for output without figures")
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Millisecond}, {99, 99 * time.Millisecond}, {100, 100 * time.Millisecond}, {0.1, time.Millisecond}} {
		if got := percentile(d, tc.p); got != tc.want {
			t.Errorf("percentile(%v)=%v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile of nothing=%v, want 0", got)
	}
}

func TestPeakRSSOfThisProcess(t *testing.T) {
	kib, err := peakRSSKiB(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if kib <= 0 {
		t.Fatalf("VmHWM=%d KiB, want > 0", kib)
	}
}

func TestStoredReply(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		body   string
		ok     bool
	}{
		{"Fava130", 200, `{"data": "Stored 1 entries.", "mtime": "1"}`, true},
		{"Fava127", 200, `{"success": true, "data": "Stored 1 entries.", "mtime": "1"}`, true},
		{"Fava127Error", 200, `{"success": false, "error": "Invalid amount"}`, false},
		{"Fava130Error", 500, `{"error": "Invalid amount"}`, false},
		{"HTML", 200, `<html></html>`, false},
		{"OtherData", 200, `{"data": true}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := storedReply(tc.status, []byte(tc.body)) == nil; got != tc.ok {
				t.Fatalf("accepted=%v, want %v", got, tc.ok)
			}
		})
	}
}

func TestCountFindsLostAndDuplicated(t *testing.T) {
	ledger := filepath.Join(t.TempDir(), "l.beancount")
	text := "2021-06-01 * \"x\" ^fb-t-u00-w000\n\n2021-06-01 * \"x\" ^fb-t-u00-w001 ^other\n\n2021-06-01 * \"x\" ^fb-t-u00-w001\n"
	if err := os.WriteFile(ledger, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	w := newWriteLoad("http://127.0.0.1:1", "s", "fb-t")
	w.acked = []string{w.link(0, 0), w.link(0, 1), w.link(0, 2)}
	var res Result
	if err := w.count(ledger, &res); err != nil {
		t.Fatal(err)
	}
	if got, want := res.Lost, 1; got != want {
		t.Errorf("Lost=%d, want %d", got, want)
	}
	if got, want := res.Duplicated, 1; got != want {
		t.Errorf("Duplicated=%d, want %d", got, want)
	}
}

func TestParseBatchStats(t *testing.T) {
	text := `# HELP favaproxy_batch_size Client requests combined into one upstream add_entries call, by ledger.
# TYPE favaproxy_batch_size histogram
favaproxy_batch_size_bucket{ledger="a",le="1"} 2
favaproxy_batch_size_sum{ledger="a"} 30
favaproxy_batch_size_count{ledger="a"} 4
favaproxy_batch_size_sum{ledger="b"} 10
favaproxy_batch_size_count{ledger="b"} 1
favaproxy_batch_size_counter_other 99
`
	calls, requests, ok := parseBatchStats(text)
	if !ok || calls != 5 || requests != 40 {
		t.Fatalf("calls=%v requests=%v ok=%v, want 5 40 true", calls, requests, ok)
	}
	if _, _, ok := parseBatchStats("go_goroutines 7\n"); ok {
		t.Fatal("ok without a batch_size histogram")
	}
}

func TestAddRound(t *testing.T) {
	var sum Result
	sum = addRound(sum, Result{OK: 100, Failed: 1, Seconds: 1, P50Ms: 1, P99Ms: 10}, 0)
	sum = addRound(sum, Result{OK: 300, Failed: 2, Seconds: 1, P50Ms: 3, P99Ms: 20}, 1)
	if sum.OK != 400 || sum.Failed != 3 || sum.Seconds != 2 || sum.PerSecond != 200 || sum.P50Ms != 2 || sum.P99Ms != 15 {
		t.Fatalf("sum=%+v, want ok 400, failed 3, 2 s, 200/s, p50 2, p99 15", sum)
	}
}

func TestParseProcStat(t *testing.T) {
	// A command name with a space and a parenthesis, as the kernel prints it.
	const line = "4242 (nginx: a) b) S 4240 4242 4242 0 -1 4194624 180 0 0 0 123 45 0 0 20 0 1 0 1000 1000 100 18446744073709551615\n"
	cpu, ppid, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ppid, 4240; got != want {
		t.Errorf("ppid=%d, want %d", got, want)
	}
	if got, want := cpu, 1680*time.Millisecond; got != want {
		t.Errorf("cpu=%v, want %v (168 ticks)", got, want)
	}
}

func TestCPUTimeOfThisProcess(t *testing.T) {
	before, err := cpuTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the kernel has counted a tick more of this process's CPU.
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		after, err := cpuTime(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if after > before {
			return
		}
	}
	t.Fatal("CPU time did not grow while this process spun for 20s")
}
