package loadtest

import (
	"bufio"
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// hostileWrites is the number of normal writes sent while the hostile
// clients are connected.
const hostileWrites = 3

// hostile runs the hostile-clients phase. While these are open:
//   - slow-loris connections sending a request's headers one byte at a time,
//     never finishing them;
//   - slow uploads: add_entries requests with complete headers whose small
//     body arrives one byte at a time (a proxy that takes the ledger lock
//     before reading the body stalls every writer behind them);
//   - two clients streaming an oversized add_entries body as fast as they
//     can, one with Content-Length and one chunked;
//   - add_entries bodies nested 10,000 and 100,000 levels deep (small, but
//     a parser that goes one level deeper per level runs out of memory);
//   - 8 import uploads announcing 60 MiB each (favaproxy reads a body whole
//     before its write waits; limits.buffer_bytes must refuse most);
//
// normal writes go through favaproxy. It reports their latency, the big
// bodies' statuses (413 wanted) and favaproxy's peak RSS.
func (b *bench) hostile(ctx context.Context) (Phase, error) {
	o := b.o
	p := Phase{Name: PhaseHostile, Title: fmt.Sprintf(
		"%d normal writes through favaproxy while %d slow-loris connections, %d slow uploads and two %d MiB add_entries bodies (Content-Length, chunked) are open",
		hostileWrites, o.SlowLoris, slowUploads, o.BigBody>>20)}
	ledger, err := b.ledger("hostile", o.Transactions)
	if err != nil {
		return p, err
	}
	emu, err := b.emulator(ledger, o.ReloadCost)
	if err != nil {
		return p, err
	}
	defer b.stop(emu, "hostile-fakefava")
	px, err := b.proxy(emu.URL(), ledger)
	if err != nil {
		return p, err
	}
	defer b.stop(px, "hostile-favaproxy")

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait

	path := "/" + b.slug + "/api/add_entries"
	b.logf("hostile: %d slow-loris connections, %d slow uploads", o.SlowLoris, slowUploads)
	loris, err := openSlow(ctx, &wg, px.Addr, o.SlowLoris, 'a', func(int) string {
		return fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: %s\r\nX-Slow: ", path, px.Addr)
	})
	if err != nil {
		return p, err
	}
	uploads, err := openSlow(ctx, &wg, px.Addr, slowUploads, ' ', func(i int) string {
		return fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAuthorization: Basic %s\r\nContent-Length: 4096\r\n\r\n{\"entries\": [",
			path, px.Addr, basic(fmt.Sprintf("slow%02d", i)))
	})
	if err != nil {
		return p, err
	}

	b.logf("hostile: two %d MiB bodies", o.BigBody>>20)
	bigs := []*bigBody{newBigBody(false), newBigBody(true)}
	for _, g := range bigs {
		wg.Go(func() { g.run(ctx, px.Addr, path, o.BigBody) })
	}
	for _, g := range bigs {
		select {
		case <-g.started:
		case <-ctx.Done():
			return p, ctx.Err()
		case <-time.After(10 * time.Second):
			return p, fmt.Errorf("a big body did not start within 10s")
		}
	}

	b.logf("hostile: deeply nested bodies")
	var deep []int
	for _, depth := range deepDepths {
		deep = append(deep, deepBody(ctx, px.URL()+path, depth))
	}

	b.logf("hostile: %d uploads of %d MiB", floodUploads, floodSize>>20)
	floodRefused := bufferFlood(px.Addr, "/"+b.slug+"/api/upload_import_file", floodUploads, floodSize)

	b.logf("hostile: normal writes")
	lorisAtWrite, uploadsAtWrite := loris.open.Load(), uploads.open.Load()
	wl := newWriteLoad(px.URL(), b.slug, "fb-hostile")
	start := time.Now()
	for n := range hostileWrites {
		wl.write(ctx, 0, n)
	}
	// With hostileWrites ≤ 100, the nearest-rank p99 is the slowest write.
	res := wl.result("favaproxy", time.Since(start))

	// The big bodies' answers, if they have not come yet: a proxy that
	// buffers a whole body answers only once all of it was sent.
	for _, g := range bigs {
		select {
		case <-g.done:
		case <-time.After(30 * time.Second):
		}
	}
	if res.PeakRSSKiB, err = peakRSSKiB(px.Cmd.Process.Pid); err != nil {
		return p, err
	}
	cancel()
	if err := wl.count(ledger, &res); err != nil {
		return p, err
	}
	notes := []string{
		fmt.Sprintf("open at the writes: %d of %d slow-loris connections, %d of %d slow uploads",
			lorisAtWrite, o.SlowLoris, uploadsAtWrite, slowUploads),
	}
	if n := loris.refused.Load() + uploads.refused.Load(); n > 0 {
		notes = append(notes, fmt.Sprintf("%d slow connections refused at connect", n))
	}
	p.Checks = []Check{
		atMost("slowest normal write, s", res.P99Ms/1000, 1),
		equal("normal writes failed or lost", float64(res.Failed+res.Lost+res.Duplicated), 0),
	}
	for _, g := range bigs {
		status, sent, bigErr := g.outcome()
		n := fmt.Sprintf("%s %d MiB body: status %d after %.1f MiB sent", g.kind(), o.BigBody>>20, status, float64(sent)/(1<<20))
		if bigErr != nil {
			n += fmt.Sprintf(" (%v)", bigErr)
		}
		notes = append(notes, n)
		p.Checks = append(p.Checks, equal(fmt.Sprintf("status of the %s %d MiB body", g.kind(), o.BigBody>>20),
			float64(status), http.StatusRequestEntityTooLarge))
	}
	notes = append(notes, fmt.Sprintf("%d of %d uploads of %d MiB refused at once", floodRefused, floodUploads, floodSize>>20))
	p.Checks = append(p.Checks, atLeast(fmt.Sprintf("uploads of %d MiB refused of %d at once", floodSize>>20, floodUploads), float64(floodRefused), floodUploads-2))
	for i, depth := range deepDepths {
		notes = append(notes, fmt.Sprintf("body nested %d deep: status %d", depth, deep[i]))
		p.Checks = append(p.Checks, equal(fmt.Sprintf("status of a body nested %d deep", depth), float64(deep[i]), http.StatusBadRequest))
	}
	p.Checks = append(p.Checks, below("favaproxy peak RSS, MiB", float64(res.PeakRSSKiB)/1024, 100))
	if res.Failed > 0 {
		notes = append(notes, wl.firstErr())
	}
	res.Note = strings.Join(notes, "; ")
	p.Results = append(p.Results, res)
	return p, nil
}

// slowUploads is the number of slow-upload connections of the hostile phase.
const slowUploads = 20

// floodUploads uploads of floodSize bytes each are announced at once.
const (
	floodUploads = 8
	floodSize    = 60 << 20
)

// bufferFlood opens n connections that each announce an upload of size
// bytes to path and send only its start, and returns how many were
// answered 503 at once (the rest are held, then closed).
func bufferFlood(addr, path string, n int, size int64) int {
	refused := 0
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			continue
		}
		conns = append(conns, c)
		fmt.Fprintf(c, "PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Type: multipart/form-data; boundary=x\r\nAuthorization: Basic %s\r\nContent-Length: %d\r\n\r\n--x\r\n",
			path, addr, basic(fmt.Sprintf("flood%02d", i)), size)
		c.SetReadDeadline(time.Now().Add(time.Second))
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			if resp.StatusCode == http.StatusServiceUnavailable {
				refused++
			}
			resp.Body.Close()
		}
	}
	return refused
}

// deepDepths are the nesting depths of the hostile phase's deep bodies.
var deepDepths = []int{10000, 100000}

// deepBody sends {"entries":[ + "[" × depth + "]" × depth + ]} to url and
// returns the answer's status (0 when none came).
func deepBody(ctx context.Context, url string, depth int) int {
	body := `{"entries":[` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, strings.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func basic(user string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":bench"))
}

// slowConns are connections that send a request's start and then one byte
// every 200 ms, never finishing it.
type slowConns struct {
	open    atomic.Int64 // connections the server has not closed
	refused atomic.Int64 // connections that could not be opened
}

// openSlow dials n connections to addr; the i-th sends head(i) and then the
// byte drip every 200 ms until ctx ends or the server closes the
// connection. It returns once every dial has been tried; the connections'
// goroutines are added to wg.
func openSlow(ctx context.Context, wg *sync.WaitGroup, addr string, n int, drip byte, head func(i int) string) (*slowConns, error) {
	s := &slowConns{}
	var d net.Dialer
	for i := range n {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s.refused.Add(1)
			continue
		}
		if _, err := io.WriteString(c, head(i)); err != nil {
			c.Close()
			s.refused.Add(1)
			continue
		}
		s.open.Add(1)
		closed := make(chan struct{})
		wg.Go(func() { // reader: notices the server closing the connection
			defer close(closed)
			io.Copy(io.Discard, c)
			s.open.Add(-1)
		})
		wg.Go(func() { // writer: one byte at a time
			defer c.Close()
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-closed:
					return
				case <-t.C:
					if _, err := c.Write([]byte{drip}); err != nil {
						return
					}
				}
			}
		})
	}
	return s, nil
}

// padReader reads an endless run of 'x'.
type padReader struct{}

func (padReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// bigBody streams an oversized add_entries body as fast as the server takes
// it and records the server's answer.
type bigBody struct {
	chunked bool          // Transfer-Encoding: chunked instead of Content-Length
	started chan struct{} // closed once the headers and a first chunk went out, or the run ended
	done    chan struct{} // closed when run returns

	// mu guards status, sent and err.
	mu     sync.Mutex
	status int
	sent   int64 // body bytes written when the answer arrived (or in all)
	err    error
}

func newBigBody(chunked bool) *bigBody {
	return &bigBody{chunked: chunked, started: make(chan struct{}), done: make(chan struct{})}
}

func (g *bigBody) kind() string {
	if g.chunked {
		return "chunked"
	}
	return "Content-Length"
}

func (g *bigBody) outcome() (int, int64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.status, g.sent, g.err
}

// run sends PUT path with a size-byte JSON body, {"entries": [], "pad":
// "xxx…"}, announced by Content-Length or sent in chunks.
func (g *bigBody) run(ctx context.Context, addr, path string, size int64) {
	defer close(g.done)
	var once sync.Once
	start := func() { once.Do(func() { close(g.started) }) }
	defer start()
	fail := func(err error) {
		g.mu.Lock()
		g.err = cmp.Or(g.err, err)
		g.mu.Unlock()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		fail(err)
		return
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	framing := fmt.Sprintf("Content-Length: %d", size)
	if g.chunked {
		framing = "Transfer-Encoding: chunked"
	}
	if _, err := fmt.Fprintf(c, "PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nAuthorization: Basic %s\r\n%s\r\n\r\n",
		path, addr, basic("bigbody-"+strings.ToLower(g.kind())), framing); err != nil {
		c.Close()
		fail(err)
		return
	}
	var sent atomic.Int64
	answered := make(chan struct{})
	go func() { // reader; ends when c is closed
		defer close(answered)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		g.mu.Lock()
		defer g.mu.Unlock()
		g.sent = sent.Load()
		if err != nil {
			g.err = cmp.Or(g.err, fmt.Errorf("reading the answer: %w", err))
			return
		}
		g.status = resp.StatusCode
		resp.Body.Close()
	}()
	defer func() {
		c.Close()
		<-answered
	}()

	head, tail := `{"entries": [], "pad": "`, `"}`
	pad := max(0, size-int64(len(head)+len(tail)))
	body := io.MultiReader(strings.NewReader(head), io.LimitReader(padReader{}, pad), strings.NewReader(tail))
	buf := make([]byte, 64<<10)
	var writeErr error
	for writeErr == nil {
		n, err := body.Read(buf)
		if n > 0 {
			writeErr = g.write(c, buf[:n])
			if sent.Add(int64(n)) >= 1<<20 {
				start()
			}
		}
		if err != nil { // io.EOF: all read
			if g.chunked && writeErr == nil {
				_, writeErr = io.WriteString(c, "0\r\n\r\n")
			}
			break
		}
		select {
		case <-answered:
			return
		default:
		}
	}
	// Everything sent, or the server stopped reading: wait for the answer.
	select {
	case <-answered:
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
		fail(fmt.Errorf("no answer within 30s of the body's end (write error: %v)", writeErr))
	}
}

// write sends p as it is, or as one chunk.
func (g *bigBody) write(c net.Conn, p []byte) error {
	if g.chunked {
		if _, err := fmt.Fprintf(c, "%x\r\n", len(p)); err != nil {
			return err
		}
	}
	if _, err := c.Write(p); err != nil {
		return err
	}
	if g.chunked {
		_, err := io.WriteString(c, "\r\n")
		return err
	}
	return nil
}
