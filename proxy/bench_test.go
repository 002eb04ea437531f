package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/config"
	"github.com/favaproxy/favaproxy/ledger"
	"github.com/favaproxy/favaproxy/lock"
)

// BenchmarkPassThrough compares a GET straight to the upstream with the same
// GET through a bare httputil.ReverseProxy configured as favaproxy's, and
// through favaproxy, for a static file (no lock) and a ledger page (shared
// lock, in-process or the command's cross-process one), all over loopback
// HTTP. Compare ns/op and allocs/op of the sub-benchmarks from one run.
func BenchmarkPassThrough(b *testing.B) {
	page := strings.Repeat("<tr><td>Assets:Bank</td><td>100.00 USD</td></tr>\n", 40) // ~2 KiB
	up := startUpstream(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, page)
	}))
	o := Options{Logger: discardLogger()}
	p := startProxy(b, testConfig(b, up.URL), o)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}}
	b.Cleanup(client.CloseIdleConnections) // before the proxy shuts down
	get := func(b *testing.B, url string) {
		b.ReportAllocs()
		for b.Loop() {
			resp, err := client.Get(url)
			if err != nil {
				b.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || n != int64(len(page)) {
				b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
			}
		}
	}
	// The floor of any Go proxy: a bare ReverseProxy with favaproxy's
	// transport and copy buffers.
	upURL, _ := url.Parse(up.URL)
	bare := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:    func(r *httputil.ProxyRequest) { r.SetURL(upURL); r.SetXForwarded() },
		Transport:  NewTransport(config.Default().Timeouts),
		BufferPool: bufferPool{},
	})
	b.Cleanup(bare.Close)
	// favaproxy with the cross-process lock of the real command.
	flCfg := testConfig(b, up.URL)
	lockPath := flCfg.Ledgers[0].LockPath()
	fl := startProxy(b, flCfg, Options{Logger: discardLogger(),
		AdjustLedger: func(lo *ledger.Options) { lo.Locker = lock.New(lockPath) }})
	b.Run("Direct", func(b *testing.B) { get(b, up.URL+"/"+testSlug+"/income_statement/") })
	b.Run("BareReverseProxy", func(b *testing.B) { get(b, bare.URL+"/"+testSlug+"/income_statement/") })
	b.Run("ProxyStatic", func(b *testing.B) { get(b, p.URL+"/static/page.html") })
	b.Run("ProxyRead", func(b *testing.B) { get(b, p.URL+"/"+testSlug+"/income_statement/") })
	b.Run("ProxyReadFileLock", func(b *testing.B) { get(b, fl.URL+"/"+testSlug+"/income_statement/") })
}

func BenchmarkRWLock(b *testing.B) {
	ctx := context.Background()
	l := ledger.NewRWLock()
	b.Run("Lock", func(b *testing.B) {
		for b.Loop() {
			release, _ := l.Lock(ctx)
			release()
		}
	})
	b.Run("RLockParallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				release, _ := l.RLock(ctx)
				release()
			}
		})
	})
}
