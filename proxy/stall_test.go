package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStalledReaderReleasesLock pins a denial of service: a client that
// starts reading a large ledger page (GET api/journal, say) and stops held
// the ledger's shared lock for ever, so every write waited out
// lock_timeout and got 503. Past timeouts.stall the answer is dropped and
// the lock released: a write goes through well before lock_timeout.
func TestStalledReaderReleasesLock(t *testing.T) {
	big := strings.Repeat("x", 32<<20) // more than the sockets buffer
	up := startUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			io.WriteString(w, big)
			return
		}
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data": "ok"}`)
	}))
	cfg := testConfig(t, up.URL)
	cfg.LockTimeout = 20 * time.Second
	cfg.Timeouts.Stall = 300 * time.Millisecond
	p := startProxy(t, cfg, Options{})

	conn, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /%s/api/journal HTTP/1.1\r\nHost: x\r\n\r\n", testSlug)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp // the client reads the headers and stops
	time.Sleep(100 * time.Millisecond)

	t0 := time.Now()
	wresp, body := do(t, http.MethodPut, p.URL+"/"+testSlug+"/api/format_source", `{"source":""}`, http.Header{"Content-Type": {"application/json"}})
	took := time.Since(t0)
	if wresp.StatusCode != http.StatusOK {
		t.Fatalf("write behind a stalled reader: status=%d after %s; %s", wresp.StatusCode, took, body)
	}
	if took > 5*time.Second {
		t.Fatalf("write behind a stalled reader took %s, want about timeouts.stall", took)
	}
	t.Logf("write behind a stalled reader: %s", took)
}
