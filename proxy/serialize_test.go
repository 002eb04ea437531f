package proxy

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/ledger"
	"github.com/favaproxy/favaproxy/lock"
)

// overlapRecorder is an upstream that records whether two writes, or a read
// and a write, were ever in progress at once. Each request stays in progress
// for a moment, as Fava's do, so that overlaps have room to happen.
type overlapRecorder struct {
	mu                 sync.Mutex // guards the fields below
	writes, reads      int        // in progress
	overlaps           int        // requests that began during a write, or a write during reads
	totalW, totalReads int
}

func (o *overlapRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	write := r.Method != http.MethodGet
	io.Copy(io.Discard, r.Body)
	o.mu.Lock()
	if o.writes > 0 || write && o.reads > 0 {
		o.overlaps++
	}
	if write {
		o.writes++
		o.totalW++
	} else {
		o.reads++
		o.totalReads++
	}
	o.mu.Unlock()

	time.Sleep(time.Millisecond) // the upstream's work, not a wait

	o.mu.Lock()
	if write {
		o.writes--
	} else {
		o.reads--
	}
	o.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"data": "Stored 1 entries.", "mtime": "1"}`)
}

// noopLocker excludes nothing: the proxy without its ledger lock.
type noopLocker struct{}

func (noopLocker) Lock(context.Context) (func(), error)  { return func() {}, nil }
func (noopLocker) RLock(context.Context) (func(), error) { return func() {}, nil }

// runMixedLoad sends, from clients goroutines spread over users, each
// perClient requests alternating writes and reads, and fails on any answer
// other than 200.
func runMixedLoad(tb testing.TB, base string, clients, users, perClient int) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, clients*perClient)
	for c := range clients {
		auth := "Basic " + base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "user%d:pw", c%users))
		wg.Go(func() {
			for i := range perClient {
				method, path, body := "GET", "/"+testSlug+"/api/ledger_data", ""
				if (c+i)%2 == 0 {
					method, path, body = "PUT", "/"+testSlug+"/api/add_entries", `{"entries":[]}`
				}
				req, err := http.NewRequest(method, base+path, stringsReader(body))
				if err != nil {
					errs <- err
					return
				}
				req.Header.Set("Authorization", auth)
				req.Header.Set("Content-Type", "application/json")
				resp, err := noRedirect.Do(req)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("%s %s: status %d", method, path, resp.StatusCode)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Error(err)
	}
}

func stringsReader(s string) io.Reader {
	if s == "" {
		return nil
	}
	return &onceReader{s: s}
}

// onceReader is a strings.Reader the http client cannot rewind.
type onceReader struct{ s string }

func (r *onceReader) Read(p []byte) (int, error) {
	if r.s == "" {
		return 0, io.EOF
	}
	n := copy(p, r.s)
	r.s = r.s[n:]
	return n, nil
}

func TestSerializeWrites(t *testing.T) {
	const clients, users, perClient = 24, 3, 10
	t.Run("Locked", func(t *testing.T) {
		rec := &overlapRecorder{}
		up := startUpstream(t, rec)
		cfg := testConfig(t, up.URL)
		cfg.Batch.Disabled = true // every write reaches Fava on its own
		p := startProxy(t, cfg, Options{})
		runMixedLoad(t, p.URL, clients, users, perClient)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.overlaps != 0 {
			t.Errorf("%d overlaps of a write with another request, want 0", rec.overlaps)
		}
		if got, want := rec.totalW+rec.totalReads, clients*perClient; got != want {
			t.Errorf("upstream saw %d requests, want %d", got, want)
		}
	})
	// The same load without the ledger lock must show overlaps, or the
	// test above proves nothing.
	t.Run("WithoutLedgerLockOverlaps", func(t *testing.T) {
		rec := &overlapRecorder{}
		up := startUpstream(t, rec)
		cfg := testConfig(t, up.URL)
		// The rollback journal assumes the lock: without it, overlapping
		// writes find each other's pre-images and are refused.
		cfg.Durability.Disabled = true
		p := startProxy(t, cfg, Options{
			NewLocker: func(config.Ledger, lock.EtcdHooks) (ledger.Locker, error) { return noopLocker{}, nil },
		})
		runMixedLoad(t, p.URL, clients, users, perClient)
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.overlaps == 0 {
			t.Errorf("no overlaps without the ledger lock: the load cannot detect a missing lock")
		}
	})
}
