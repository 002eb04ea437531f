package favatest

import (
	"os"
	"strconv"
	"testing"
	"time"
)

// TestWatchDelay: with WatchDelay, as with Fava's watchfiles watcher, a
// change made by another program is not seen by GET changed (nor in the
// mtime of answers) until the delay has passed, while Fava's own write is
// seen at once (watcher.notify). Without it, every check stats the files.
func TestWatchDelay(t *testing.T) {
	const delay = 500 * time.Millisecond
	for _, d := range []time.Duration{0, delay} {
		t.Run(d.String(), func(t *testing.T) {
			e := newEmu(t, Options{WatchDelay: d}, baseLedger)
			mtime := func(r reply) int64 {
				t.Helper()
				n, err := strconv.ParseInt(r.body["mtime"].(string), 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			f, err := os.OpenFile(e.main, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("\n2024-05-01 open Assets:Other\n")
			f.Close()
			fi, err := os.Stat(e.main)
			if err != nil {
				t.Fatal(err)
			}
			r := e.api("GET", "changed", nil, nil)
			seen := r.body["data"] == true && mtime(r) == fi.ModTime().UnixNano()
			if seen != (d == 0) {
				t.Fatalf("changed at once: %s; want the change seen=%v", r.raw, d == 0)
			}
			if d > 0 {
				time.Sleep(d)
				if r := e.api("GET", "changed", nil, nil); r.body["data"] != true || mtime(r) != fi.ModTime().UnixNano() {
					t.Fatalf("changed after the delay: %s, want the change seen (mtime %d)", r.raw, fi.ModTime().UnixNano())
				}
			}
			// Fava's own write is seen at once.
			w := e.api("PUT", "add_entries", nil, map[string]any{"entries": []any{map[string]any{
				"t": "Note", "date": "2024-06-01", "account": "Assets:Other", "comment": "own write", "meta": map[string]any{}}}})
			if w.status != 200 {
				t.Fatalf("add_entries: %d %s", w.status, w.raw)
			}
			fi, _ = os.Stat(e.main)
			if r := e.api("GET", "changed", nil, nil); mtime(r) != fi.ModTime().UnixNano() {
				t.Errorf("after Fava's own write: %s, want mtime %d", r.raw, fi.ModTime().UnixNano())
			}
		})
	}
}
