package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/ledger"
)

// TestReadTimeoutDoesNotCancelWaits pins that timeouts.read bounds reading a
// request, not its wait for the lock or for Fava (net/http clears the read
// deadline once the body is read; a request canceled by it would get an
// empty 200 here, not Fava's answer).
func TestReadTimeoutDoesNotCancelWaits(t *testing.T) {
	up := &recordingUpstream{}
	lk := ledger.NewRWLock()
	cfg := testConfig(t, startUpstream(t, up).URL)
	cfg.Timeouts.Read = 100 * time.Millisecond
	p := startProxy(t, cfg, sharedLock(lk))
	release, err := lk.Lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	write := putAsync(context.Background(), p.URL+"/"+testSlug+"/api/add_entries", "W", "alice")
	read := make(chan string, 1)
	go func() {
		resp, err := http.Get(p.URL + "/" + testSlug + "/api/ledger_data")
		if err != nil {
			read <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		read <- fmt.Sprint(resp.StatusCode, " ", string(b))
	}()
	waitFor(t, "both to wait", func() bool { return p.bySlug[testSlug].Waiting() == 1 })
	time.Sleep(3 * cfg.Timeouts.Read) // the timeout under test must pass
	release()
	if resp := <-write; resp == nil || resp.StatusCode != http.StatusOK {
		t.Errorf("write: %v, want 200", resp)
	}
	if got, want := <-read, `200 {"data": "ok"}`; got != want {
		t.Errorf("read: %q, want %q", got, want)
	}
	if got, want := strings.Join(up.Seen(), ","), ",W"; got != want && got != "W," {
		t.Errorf("upstream saw %q, want the read and the write", got)
	}
}
