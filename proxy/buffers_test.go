package proxy

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestBufferedBodiesBounded pins a memory exhaustion: bodies are read whole
// before a write waits for the lock, with no bound on how many at once
// (8 uploads of 60 MiB held about 1 GB). limits.buffer_bytes bounds them
// all together: past it a write is answered 503 with Retry-After at once,
// and once the bodies in flight are gone writes go through again.
func TestBufferedBodiesBounded(t *testing.T) {
	up := &recordingUpstream{}
	cfg := testConfig(t, startUpstream(t, up).URL)
	cfg.Limits.JSONBody, cfg.Limits.SourceBody, cfg.Limits.UploadBody = 1<<20, 1<<20, 1<<20
	cfg.Limits.BufferBytes = 2 << 20
	p := startProxy(t, cfg, Options{})
	addr := strings.TrimPrefix(p.URL, "http://")
	path := "/" + testSlug + "/api/format_source"

	// Two uploads announce 1 MiB each and send only the start of it; each
	// is admitted (no answer comes) before the next starts.
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "PUT %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"source\":\"", path, 1<<20)
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(make([]byte, 1)); n > 0 || err == nil {
			t.Fatal("an upload within the bound was answered before its body came")
		}
	}
	resp, _ := do(t, http.MethodPut, p.URL+path, `{"source":""}`, http.Header{"Content-Type": {"application/json"}})
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("write while 2 MiB of bodies are held: status=%d, want 503 with Retry-After", resp.StatusCode)
	}
	for _, c := range conns {
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, _ = do(t, http.MethodPut, p.URL+path, `{"source":""}`, http.Header{"Content-Type": {"application/json"}})
		if resp.StatusCode == http.StatusOK || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("write once the uploads are gone: status=%d, want 200", resp.StatusCode)
	}
}
