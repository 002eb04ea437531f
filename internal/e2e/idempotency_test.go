package e2e

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// keyedEntry sends one add_entries with a transaction narrated narration,
// with the idempotency key key ("" for none).
func keyedEntry(tb testing.TB, base, key, narration string) (*http.Response, string) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodPut, base+"/"+slug+"/api/add_entries", bytes.NewReader(entriesBody(narration)))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	res, err := client.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return res, string(b)
}

func countIn(tb testing.TB, path, s string) int {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return strings.Count(string(b), s)
}

// TestIdempotencyThroughProxyProcesses: the same keyed request sent 10
// times in sequence, then 32 times at once split over two favaproxy
// processes (sharing the lock file and journal beside the ledger), leaves
// one entry each; every answer is the first one's or a 409.
func TestIdempotencyThroughProxyProcesses(t *testing.T) {
	requireProxy(t)
	sh := runShape()
	ledger := newLedger(t, 50)
	emu := startEmulator(t, ledger, filepath.Join(filepath.Dir(ledger), "trace.jsonl"), sh)
	proxies := []string{startProxy(t, emu.URL(), ledger).URL(), startProxy(t, emu.URL(), ledger).URL()}

	var first string
	for i := range 10 {
		res, body := keyedEntry(t, proxies[i%2], "e2e-seq", "sequential write")
		if res.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d %s", i, res.StatusCode, body)
		}
		if got, want := res.Header.Get("Idempotent-Replayed") == "true", i > 0; got != want {
			t.Errorf("request %d: replayed=%v, want %v", i, got, want)
		}
		if i == 0 {
			first = body
		} else if body != first {
			t.Errorf("request %d: body %q, want %q", i, body, first)
		}
	}
	if n := countIn(t, ledger, "sequential write"); n != 1 {
		t.Fatalf("sequential: %d entries, want 1", n)
	}

	statuses, bodies := make([]int, 32), make([]string, 32)
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			res, body := keyedEntry(t, proxies[i%2], "e2e-conc", "concurrent write")
			statuses[i], bodies[i] = res.StatusCode, body
		})
	}
	wg.Wait()
	first = ""
	for i, st := range statuses {
		switch {
		case st == http.StatusOK && first == "":
			first = bodies[i]
		case st == http.StatusOK && bodies[i] != first:
			t.Errorf("reply %d = %q, want %q", i, bodies[i], first)
		case st != http.StatusOK && st != http.StatusConflict:
			t.Errorf("reply %d: status %d %s", i, st, bodies[i])
		}
	}
	if first == "" {
		t.Errorf("no request succeeded: %v", statuses)
	}
	if n := countIn(t, ledger, "concurrent write"); n != 1 {
		t.Fatalf("concurrent: %d entries, want 1", n)
	}
}

// TestScanFindsRetriedWrites: a write retried without a key through
// favaproxy lands twice; `favaproxy scan` reports it and exits 1.
func TestScanFindsRetriedWrites(t *testing.T) {
	requireProxy(t)
	sh := runShape()
	ledger := newLedger(t, 20)
	emu := startEmulator(t, ledger, filepath.Join(filepath.Dir(ledger), "trace.jsonl"), sh)
	base := startProxy(t, emu.URL(), ledger).URL()
	scan := func() (int, string) {
		out, err := exec.Command(bins.favaproxy, "scan", "--prefix", "fp-", ledger).CombinedOutput()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, string(out)
		case errors.As(err, &ee):
			return ee.ExitCode(), string(out)
		}
		t.Fatal(err)
		return 0, ""
	}
	if code, out := scan(); code != 0 {
		t.Fatalf("generated ledger: scan exit %d, want 0:\n%s", code, out)
	}
	for range 2 {
		if res, body := keyedEntry(t, base, "", "retried without a key"); res.StatusCode != http.StatusOK {
			t.Fatalf("status %d %s", res.StatusCode, body)
		}
	}
	code, out := scan()
	if code != 1 || !strings.Contains(out, `"retried without a key": 2 copies`) {
		t.Fatalf("scan exit %d, want 1 and the retried write:\n%s", code, out)
	}
}
