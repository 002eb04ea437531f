package beancount_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/internal/ledgergen"
)

// benchTransactions is the size of the ledger the ratio benchmarks use.
const benchTransactions = 50000

var big struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// bigLedger returns a generated ledger of benchTransactions transactions,
// written once per test binary run.
func bigLedger(tb testing.TB) string {
	tb.Helper()
	big.once.Do(func() {
		big.dir, big.err = os.MkdirTemp("", "beancount-bench-")
		if big.err != nil {
			return
		}
		big.path = filepath.Join(big.dir, "big.beancount")
		big.err = ledgergen.File(big.path, ledgergen.Options{Title: "Bench", Transactions: benchTransactions, Seed: 7})
	})
	if big.err != nil {
		tb.Fatal(big.err)
	}
	return big.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if big.dir != "" {
		os.RemoveAll(big.dir)
	}
	os.Exit(code)
}

// scanFile is the full scan the ratios measure: read the file, scan it.
func scanFile(tb testing.TB, path string) []beancount.Block {
	blocks, err := beancount.ScanFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return blocks
}

// cpuTime is the CPU time (user and system, all threads) the test process
// has used so far. On a loaded machine it measures the work done where the
// wall clock also measures the wait for a core.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScan is the scanner alone on the bench ledger, in memory.
func BenchmarkScan(b *testing.B) {
	src, err := os.ReadFile(bigLedger(b))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	c0 := cpuTime(b)
	for b.Loop() {
		beancount.Scan(src)
	}
	b.ReportMetric((cpuTime(b)-c0).Seconds()*1e3/float64(b.N), "cpu-ms/op")
}

// BenchmarkRatioGrep times, in each iteration, a full scan of the bench
// ledger (read and scan) and `grep -c '\^'` on the same file, and reports
// scan throughput as a multiple of grep's (x-grep; the target is >= 0.25).
func BenchmarkRatioGrep(b *testing.B) {
	path := bigLedger(b)
	grep, err := exec.LookPath("grep")
	if err != nil {
		b.Skipf("grep: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	var scan, grepped, scanCPU, grepCPU time.Duration
	for b.Loop() {
		c0 := cpuTime(b)
		t0 := time.Now()
		scanFile(b, path)
		t1 := time.Now()
		scanCPU += cpuTime(b) - c0
		cmd := exec.Command(grep, "-c", `\^`, path)
		out, err := cmd.Output()
		if err != nil || len(bytes.TrimSpace(out)) == 0 {
			b.Fatalf("grep: %v %q", err, out)
		}
		scan += t1.Sub(t0)
		grepped += time.Since(t1)
		grepCPU += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	mb := float64(fi.Size()) * float64(b.N) / 1e6
	b.ReportMetric(mb/scan.Seconds(), "scan-MB/s")
	b.ReportMetric(mb/grepped.Seconds(), "grep-MB/s")
	b.ReportMetric(grepped.Seconds()/scan.Seconds(), "x-grep")
	b.ReportMetric(grepCPU.Seconds()/scanCPU.Seconds(), "x-grep-cpu")
}

var beanCheck struct {
	once sync.Once
	dur  time.Duration
	err  error
	out  []byte
}

// BenchmarkRatioBeanCheck runs bean-check once on the bench ledger and
// full scans b.N times, and reports how many times faster the scan is
// (x-bean-check; the target is >= 100).
func BenchmarkRatioBeanCheck(b *testing.B) {
	path := bigLedger(b)
	tool := beanTool(b, "bean-check")
	beanCheck.once.Do(func() {
		t0 := time.Now()
		beanCheck.out, beanCheck.err = exec.Command(tool, path).CombinedOutput()
		beanCheck.dur = time.Since(t0)
	})
	if beanCheck.err != nil {
		b.Fatalf("bean-check: %v\n%s", beanCheck.err, beanCheck.out)
	}
	var scan time.Duration
	for b.Loop() {
		t0 := time.Now()
		scanFile(b, path)
		scan += time.Since(t0)
	}
	perScan := scan.Seconds() / float64(b.N)
	b.ReportMetric(beanCheck.dur.Seconds(), "bean-check-s")
	b.ReportMetric(perScan*1e3, "scan-ms")
	b.ReportMetric(beanCheck.dur.Seconds()/perScan, "x-bean-check")
}

// BenchmarkRatioRefresh appends one entry to a copy of the bench ledger
// and refreshes its index in each iteration, and also times building the
// index from scratch (a full rescan); it reports how many times cheaper the
// refresh after an append is (x-full-rescan; the target is >= 20).
func BenchmarkRatioRefresh(b *testing.B) {
	src, err := os.ReadFile(bigLedger(b))
	if err != nil {
		b.Fatal(err)
	}
	main := filepath.Join(b.TempDir(), "main.beancount")
	if err := os.WriteFile(main, src, 0o644); err != nil {
		b.Fatal(err)
	}
	ix := beancount.NewIndex(main, beancount.IndexOptions{})
	if err := ix.Refresh(); err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(main, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var refresh, full time.Duration
	i := 0
	for b.Loop() {
		i++
		entry := "\n2030-01-01 * \"Appended\" ^bench-" + strconv.Itoa(i) +
			"\n  idempotency-key: \"b-" + strconv.Itoa(i) + "\"\n  Expenses:Rent  1.00 USD\n  Assets:Cash\n"
		if _, err := f.WriteString(entry); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if err := ix.Refresh(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		fresh := beancount.NewIndex(main, beancount.IndexOptions{})
		if err := fresh.Refresh(); err != nil {
			b.Fatal(err)
		}
		full += time.Since(t1)
		refresh += t1.Sub(t0)
		if len(ix.Link("bench-"+strconv.Itoa(i))) != 1 {
			b.Fatalf("appended entry %d not indexed", i)
		}
	}
	b.ReportMetric(refresh.Seconds()*1e6/float64(b.N), "refresh-µs")
	b.ReportMetric(full.Seconds()*1e6/float64(b.N), "full-µs")
	b.ReportMetric(full.Seconds()/refresh.Seconds(), "x-full-rescan")
}
