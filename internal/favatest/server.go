// Package favatest is a stand-in for Fava, the Beancount web UI, for tests.
// It serves ledgers from real files with Fava's JSON API in the wire styles
// of Fava 1.27 and 1.30, and it breaks the way Fava breaks: its only lock is
// in-process, every write truncates the file and writes it back (optionally
// in slow chunks), reloads cost time proportional to the ledger and can read
// a half-written file, entry hashes go stale when lines shift, and a write's
// answer carries the modification time from before the write.
//
// It follows the project's notes on Fava's wire contract (FAVA-API.md). It
// is a test instrument: nothing outside tests imports it.
package favatest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/checksum"
)

// DefaultReloadCostPerTxn is how long a reload takes per transaction,
// modelled on Fava measured here (about 0.13 s for 1,000 transactions).
const DefaultReloadCostPerTxn = 130 * time.Microsecond

// Options configure a Server.
type Options struct {
	// Style is the wire style: Style127, Style130 or Style1308. Empty means
	// Style130.
	Style string
	// Prefix is Fava's --prefix, such as "/fava". Empty means none.
	Prefix string
	// ReloadCostPerTxn is the time a reload sleeps per transaction. Zero
	// means DefaultReloadCostPerTxn; negative means reloads are free.
	ReloadCostPerTxn time.Duration
	// WriteChunk writes files back in chunks of this many bytes, with
	// WritePause before each chunk (also before the first one, after the
	// truncation). Zero means one write of the whole file.
	WriteChunk int
	// WritePause is the pause before each chunk of a chunked write.
	WritePause time.Duration
	// WriteDelay is an extra sleep inside every write, after the file was
	// truncated, for tests that need slow writes.
	WriteDelay time.Duration
	// Trace is the path of a trace file that every write and every ledger
	// read appends JSON lines to (see Overlaps). Empty means no trace.
	Trace string
	// RequestCost is CPU time every request burns, one request at a time
	// (Fava renders in Python, under one interpreter lock), so that the
	// emulator answers about as many requests per second as Fava and takes
	// as much of the machine. Zero means none.
	RequestCost time.Duration
	// WatchDelay is how long a change made to a ledger file by anyone but
	// Fava itself goes unseen, as with Fava's default watcher from 1.29
	// on: a watchfiles thread that reports changes after a debounce, so
	// that GET changed and the mtime of answers only see a change once it
	// has reported it. Zero is the polling watcher (Fava up to 1.28, or
	// --poll-watcher), which stats the files at every check.
	WatchDelay time.Duration
}

// Server is an http.Handler that behaves like Fava serving some ledgers.
type Server struct {
	opts    Options
	style   *style
	ledgers []*ledger
	trace   *tracer

	// gil serializes the RequestCost of requests, as Python's
	// interpreter lock serializes Fava's threads.
	gil sync.Mutex
}

// burn spins for d of CPU time while holding s.gil. It counts the CPU
// time of its thread (to which it is locked), not time passed, so that on a
// loaded machine a request still costs d of the machine. The sum it
// returns is only there to give the loop a result.
func (s *Server) burn(d time.Duration) uint64 {
	s.gil.Lock()
	defer s.gil.Unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var sum uint64
	start := threadCPU()
	for threadCPU()-start < d {
		for i := range uint64(1000) {
			sum += i
		}
	}
	return sum
}

// threadCPU returns the CPU time of the calling thread.
func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// ledger is one served ledger: Fava's FavaLedger.
type ledger struct {
	srv  *Server
	main string // absolute path of the main file

	// writeMu is Fava's per-ledger threading.Lock. It orders the writes of
	// this process and nothing else: reads, reloads and other processes
	// pass it by.
	writeMu sync.Mutex

	// mu guards snap, lastChecked, stamps and dirty.
	mu          sync.Mutex
	snap        *snapshot
	lastChecked int64 // the watcher's last_checked: Fava's reported mtime
	stamps      map[string]stamp
	dirty       bool // a write of ours touched a file since the last check
	// notified are the files our writes touched since the last check,
	// with their stamps after the write: Fava's watcher.notify, which
	// makes a write of Fava's seen at once even with WatchDelay.
	notified map[string]stamp
}

type stamp struct {
	mtime int64
	size  int64
}

// New loads the ledgers whose main files are ledgerPaths and returns a
// Server for them.
func New(opts Options, ledgerPaths ...string) (*Server, error) {
	st, err := lookupStyle(opts.Style)
	if err != nil {
		return nil, err
	}
	if len(ledgerPaths) == 0 {
		return nil, errors.New("favatest: no ledger")
	}
	if opts.ReloadCostPerTxn == 0 {
		opts.ReloadCostPerTxn = DefaultReloadCostPerTxn
	}
	opts.Prefix = strings.TrimRight(opts.Prefix, "/")
	if opts.Prefix != "" && !strings.HasPrefix(opts.Prefix, "/") {
		opts.Prefix = "/" + opts.Prefix
	}
	tr, err := openTracer(opts.Trace)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, style: st, trace: tr}
	for _, p := range ledgerPaths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("favatest: %w", err)
		}
		if _, err := os.Stat(abs); err != nil {
			return nil, fmt.Errorf("favatest: ledger: %w", err)
		}
		l := &ledger{srv: s, main: abs}
		l.stamps, l.lastChecked = statFiles([]string{abs})
		if err := l.reload(); err != nil {
			return nil, fmt.Errorf("favatest: load %s: %w", abs, err)
		}
		s.ledgers = append(s.ledgers, l)
	}
	return s, nil
}

// Close releases the trace file.
func (s *Server) Close() error { return s.trace.close() }

// Slugs returns the ledgers' slugs as they are now, in load order.
func (s *Server) Slugs() []string {
	slugs := make([]string, len(s.ledgers))
	for i, l := range s.ledgers {
		slugs[i] = beancount.LedgerSlug(l.snapshot().title, l.main)
	}
	return beancount.UniqueSlugs(slugs)
}

func (l *ledger) snapshot() *snapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snap
}

func (l *ledger) mtime() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastChecked
}

func statFiles(files []string) (map[string]stamp, int64) {
	stamps := make(map[string]stamp, len(files))
	var latest int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			stamps[f] = stamp{-1, -1}
			continue
		}
		st := stamp{fi.ModTime().UnixNano(), fi.Size()}
		stamps[f] = st
		latest = max(latest, st.mtime)
	}
	return stamps, latest
}

// changed is Fava's ledger.changed(): if any file of the ledger changed
// since the last check (by mtime or size), or a write of ours touched one,
// reload and report true.
func (l *ledger) changed() (bool, error) {
	l.mu.Lock()
	files := l.snap.files
	stamps, latest := statFiles(files)
	if d := l.srv.opts.WatchDelay; d > 0 {
		// Changes younger than the delay are not reported yet.
		cutoff := time.Now().Add(-d).UnixNano()
		latest = 0
		for f, st := range stamps {
			if old, ok := l.stamps[f]; ok && st != old && st.mtime > cutoff && l.notified[f] != st {
				stamps[f] = old
			}
			latest = max(latest, stamps[f].mtime)
		}
	}
	changed := l.dirty || latest > l.lastChecked || !sameStamps(stamps, l.stamps)
	if changed {
		l.lastChecked = max(l.lastChecked, latest)
		l.stamps = stamps
		l.dirty = false
		l.notified = nil
	}
	l.mu.Unlock()
	if changed {
		return true, l.reload()
	}
	return false, nil
}

func sameStamps(a, b map[string]stamp) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// notify is Fava's watcher.notify after a write: the next check reloads.
func (l *ledger) notify(path string) {
	st, _ := statFiles([]string{path})
	l.mu.Lock()
	l.dirty = true
	if l.notified == nil {
		l.notified = map[string]stamp{}
	}
	l.notified[path] = st[path]
	l.mu.Unlock()
}

// reload reads every file of the ledger and then spends the reload cost.
// Like Fava's load_file it takes no lock against writers: it can read a
// file that a write is halfway through. A file that cannot be decoded makes
// the load raise: the old state stays and the caller answers HTML 500.
func (l *ledger) reload() error {
	id := l.srv.trace.start("read")
	snap := load(l.main, os.ReadFile)
	l.srv.trace.end("read", id)
	if c := l.srv.opts.ReloadCostPerTxn; c > 0 {
		time.Sleep(time.Duration(snap.txns) * c)
	}
	if snap.broken != nil {
		return &uncaughtError{snap.broken.Error()}
	}
	l.mu.Lock()
	l.snap = snap
	l.mu.Unlock()
	return nil
}

// readSource reads one file of the ledger for an API read (traced).
func (s *Server) readSource(path string) ([]byte, error) {
	id := s.trace.start("read")
	defer s.trace.end("read", id)
	return os.ReadFile(path)
}

// rewrite is how Fava writes: read the whole file, change its lines, then
// open it with truncation and write everything back, without a temp file,
// fsync or file lock. With Options.WriteChunk the writing is slow and a
// concurrent reader (or another process, or kill -9) sees a torn file.
func (s *Server) rewrite(path string, edit func(lines []string) ([]string, error)) error {
	id := s.trace.start("write")
	defer s.trace.end("write", id)
	raw, err := os.ReadFile(path)
	if err != nil {
		return plainError(err.Error())
	}
	if !utf8.Valid(raw) {
		return &uncaughtError{"UnicodeDecodeError: 'utf-8' codec can't decode " + path}
	}
	lines, err := edit(checksum.Lines(string(checksum.Normalize(raw))))
	if err != nil {
		return err
	}
	out := []byte(checksum.Denormalize(strings.Join(lines, ""), checksum.Newline(raw)))
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return plainError(err.Error())
	}
	time.Sleep(s.opts.WriteDelay)
	chunk := s.opts.WriteChunk
	if chunk <= 0 {
		chunk = len(out)
	}
	for len(out) > 0 {
		n := min(chunk, len(out))
		if s.opts.WriteChunk > 0 {
			time.Sleep(s.opts.WritePause)
		}
		if _, err := f.Write(out[:n]); err != nil {
			f.Close()
			return plainError(err.Error())
		}
		out = out[n:]
	}
	if err := f.Close(); err != nil {
		return plainError(err.Error())
	}
	return nil
}

// ServeHTTP routes like Fava: /[prefix]/<slug>/api/<name>, report pages
// /<slug>/<page>/, /static/…, and / redirecting to the first ledger.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.opts.RequestCost > 0 {
		_ = s.burn(s.opts.RequestCost)
	}
	path := r.URL.Path
	if s.opts.Prefix != "" {
		if path != s.opts.Prefix && !strings.HasPrefix(path, s.opts.Prefix+"/") {
			htmlError(w, http.StatusNotFound)
			return
		}
		path = strings.TrimPrefix(path, s.opts.Prefix)
	}
	if path == "" || path == "/" {
		if !allow(w, r, http.MethodGet) {
			return
		}
		http.Redirect(w, r, s.opts.Prefix+"/"+s.Slugs()[0]+"/income_statement/", http.StatusFound)
		return
	}
	if rest, ok := strings.CutPrefix(path, "/static/"); ok {
		s.serveStatic(w, r, rest)
		return
	}
	slug, rest, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	l := s.ledgerBySlug(slug)
	if l == nil {
		htmlError(w, http.StatusNotFound)
		return
	}
	switch {
	case rest == "":
		if !allow(w, r, http.MethodGet) {
			return
		}
		http.Redirect(w, r, s.opts.Prefix+"/"+slug+"/income_statement/", http.StatusFound)
	case strings.HasPrefix(rest, "api/"):
		s.serveAPI(w, r, l, strings.TrimPrefix(rest, "api/"))
	case isPage(rest):
		if !allow(w, r, http.MethodGet) {
			return
		}
		if _, err := l.changed(); err != nil {
			htmlError(w, http.StatusInternalServerError)
			return
		}
		snap := l.snapshot()
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html>\n<html lang=\"en\">\n<head><title>%s - %s</title>\n<link rel=\"stylesheet\" href=\"%s/static/app.css\"></head>\n<body><h1>%s</h1>\n<p>%d entries</p></body>\n</html>\n",
			htmlEscape(rest), htmlEscape(snap.title), s.opts.Prefix, htmlEscape(snap.title), len(snap.entries))
	default:
		htmlError(w, http.StatusNotFound)
	}
}

// isPage matches /<slug>/<report>/ and /<slug>/account/<name>/.
func isPage(rest string) bool {
	if !strings.HasSuffix(rest, "/") {
		return false
	}
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	if len(parts) == 2 && parts[0] == "account" && parts[1] != "" {
		return true
	}
	return len(parts) == 1 && parts[0] != ""
}

// ledgerBySlug finds the ledger served under slug. Titles, and so slugs,
// come from the last load, which may have read a torn file. Fava ≤ 1.29
// checks every ledger for changes before giving up on a slug.
func (s *Server) ledgerBySlug(slug string) *ledger {
	for i, sl := range s.Slugs() {
		if sl == slug {
			return s.ledgers[i]
		}
	}
	if !s.style.reloadOnUnknownSlug {
		return nil
	}
	for _, l := range s.ledgers {
		l.changed()
	}
	for i, sl := range s.Slugs() {
		if sl == slug {
			return s.ledgers[i]
		}
	}
	return nil
}

// staticFiles are the assets served under /static/: deterministic bytes.
var staticFiles = map[string]struct {
	ctype string
	body  []byte
}{
	"app.js":  {"text/javascript; charset=utf-8", bytes.Repeat([]byte("/* fava emulator app.js */\nconsole.log(\"fava\");\n"), 64)},
	"app.css": {"text/css; charset=utf-8", bytes.Repeat([]byte("body { margin: 0; }\n"), 64)},
	"favicon.ico": {"image/vnd.microsoft.icon", func() []byte {
		b := make([]byte, 1150)
		for i := range b {
			b[i] = byte(i * 7)
		}
		return b
	}()},
}

func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request, name string) {
	f, ok := staticFiles[name]
	if !ok {
		htmlError(w, http.StatusNotFound)
		return
	}
	if !allow(w, r, http.MethodGet) {
		return
	}
	w.Header().Set("Content-Type", f.ctype)
	w.Header().Set("Content-Length", fmt.Sprint(len(f.body)))
	if r.Method != http.MethodHead {
		w.Write(f.body)
	}
}

// allow answers 405 unless r's method is one of methods (HEAD counts as
// GET, as in Flask).
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	m := r.Method
	if m == http.MethodHead {
		m = http.MethodGet
	}
	for _, x := range methods {
		if x == m {
			return true
		}
	}
	allowed := append([]string(nil), methods...)
	for _, x := range methods {
		if x == http.MethodGet {
			allowed = append(allowed, http.MethodHead)
		}
	}
	allowed = append(allowed, http.MethodOptions)
	sort.Strings(allowed)
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	htmlError(w, http.StatusMethodNotAllowed)
	return false
}

var htmlErrors = map[int][2]string{
	http.StatusNotFound:            {"Not Found", "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again."},
	http.StatusMethodNotAllowed:    {"Method Not Allowed", "The method is not allowed for the requested URL."},
	http.StatusInternalServerError: {"Internal Server Error", "The server encountered an internal error and was unable to complete your request. Either the server is overloaded or there is an error in the application."},
}

// htmlError answers like Werkzeug's default error pages.
func htmlError(w http.ResponseWriter, status int) {
	e := htmlErrors[status]
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html>\n<html lang=en>\n<title>%d %s</title>\n<h1>%s</h1>\n<p>%s</p>\n", status, e[0], e[0], e[1])
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s)
}

// writeJSON answers like Flask's jsonify: sorted keys, compact, ASCII only,
// and a trailing newline.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		htmlError(w, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(asciiJSON(buf.Bytes()))
}

// asciiJSON escapes every non-ASCII character as \uXXXX, as Python's json
// does by default. Outside strings JSON is ASCII, so this is safe.
func asciiJSON(b []byte) []byte {
	var out bytes.Buffer
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r < utf8.RuneSelf:
			out.WriteByte(b[0])
		case r > 0xFFFF:
			r -= 0x10000
			fmt.Fprintf(&out, `\u%04x\u%04x`, 0xD800+(r>>10), 0xDC00+(r&0x3FF))
		default:
			fmt.Fprintf(&out, `\u%04x`, r)
		}
		b = b[size:]
	}
	return out.Bytes()
}
