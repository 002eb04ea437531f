package beancount_test

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/internal/ledgergen"
)

// ledgerDir returns the absolute path of a scenario in testdata/ledgers.
func ledgerDir(tb testing.TB, name string) string {
	tb.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "testdata", "ledgers", name))
	if err != nil {
		tb.Fatal(err)
	}
	return dir
}

// copyDir copies a scenario into a temporary directory, so tests can change it.
func copyDir(tb testing.TB, src string) string {
	tb.Helper()
	dst := tb.TempDir()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		tb.Fatal(err)
	}
	return dst
}

func refreshed(tb testing.TB, main string) *beancount.Index {
	tb.Helper()
	ix := beancount.NewIndex(main, beancount.IndexOptions{})
	if err := ix.Refresh(); err != nil {
		tb.Fatal(err)
	}
	return ix
}

func lines(occ []beancount.Occurrence) []int {
	var out []int
	for _, o := range occ {
		out = append(out, o.Line)
	}
	return out
}

func TestIndexQueries(t *testing.T) {
	main := filepath.Join(ledgerDir(t, "metadata"), "main.beancount")
	ix := refreshed(t, main)
	for _, tc := range []struct {
		value string
		want  []int
	}{
		{"k1", []int{6}},
		{"k10", []int{17}},
		{"k100", []int{20}},
		{"open-bank", []int{2}},
		{"posting-level", nil},
		{"k", nil},
	} {
		if got := lines(ix.MetaValue(tc.value)); !slices.Equal(got, tc.want) {
			t.Errorf("MetaValue(%q) at lines %v, want %v", tc.value, got, tc.want)
		}
	}
	if got := ix.MetaValue("k10"); len(got) != 1 || got[0].Kind != beancount.KindBalance || got[0].Date != "2024-01-03" || got[0].File != main {
		t.Errorf("MetaValue(k10)=%+v", got)
	}
	if got, want := ix.Ledger().Title, "Metadata"; got != want {
		t.Errorf("Title=%q, want %q", got, want)
	}
	if line, ok := ix.LastOpen(main); !ok || line != 4 {
		t.Errorf("LastOpen=%d,%v, want 4,true", line, ok)
	}

	// Every block's slice checksum leads back to it.
	src, err := os.ReadFile(main)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range ix.Blocks(main) {
		slice, _ := checksum.Slice(string(checksum.Normalize(src)), b.Line)
		if got := lines(ix.SliceSum(checksum.String(slice))); !slices.Contains(got, b.Line) {
			t.Errorf("SliceSum of the slice at line %d finds lines %v", b.Line, got)
		}
	}
	if got := ix.SliceSum(checksum.String("nothing like it")); got != nil {
		t.Errorf("SliceSum(unknown)=%v", got)
	}
	if got := ix.SliceSum("not hex"); got != nil {
		t.Errorf("SliceSum(not hex)=%v", got)
	}
}

func TestIndexIncludes(t *testing.T) {
	dir := copyDir(t, ledgerDir(t, "includes-glob"))
	main := filepath.Join(dir, "main.beancount")
	ix := refreshed(t, main)
	l := ix.Ledger()
	want := []string{"main.beancount", "accounts/assets.beancount", "accounts/other.beancount",
		"txns/2024-01.beancount", "txns/2024-02.beancount", "nested/more.beancount", "nested/deeper.beancount"}
	for i := range want {
		want[i] = filepath.Join(dir, want[i])
	}
	if !slices.Equal(l.Files, want) {
		t.Errorf("Files=%q\nwant %q", l.Files, want)
	}
	if got, want := l.Slug, "household-books"; got != want {
		t.Errorf("Slug=%q, want %q", got, want)
	}
	if got := lines(ix.Link("inv-1")); len(got) != 2 {
		t.Errorf("Link(inv-1) at %v, want two transactions", got)
	}
	if got := lines(ix.Link("inv-10")); !slices.Equal(got, []int{5}) {
		t.Errorf("Link(inv-10) at %v, want [5]", got)
	}
	if !ix.Opened("Expenses:Old") || !ix.Closed("Expenses:Old") || slices.Contains(ix.Accounts(), "Expenses:Old") {
		t.Errorf("Expenses:Old: opened and closed; Accounts()=%v", ix.Accounts())
	}
	if !ix.Opened("Assets:Deep") || ix.Opened("Assets:Nope") {
		t.Error("Opened: wrong for Assets:Deep or Assets:Nope")
	}

	l2, err := beancount.Load(main)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(l2, l) {
		t.Errorf("Load=%+v\nindex=%+v", l2, l)
	}

	t.Run("NewFileMatchingGlob", func(t *testing.T) {
		extra := filepath.Join(dir, "txns", "2024-03.beancount")
		writeFile(t, extra, "2024-03-01 * \"New\" ^new-file\n  Assets:Cash  -1 USD\n  Expenses:Food\n")
		if err := ix.Refresh(); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(ix.Ledger().Files, extra) {
			t.Errorf("Files=%q lacks %s", ix.Ledger().Files, extra)
		}
		if got := ix.Link("new-file"); len(got) != 1 || got[0].File != extra {
			t.Errorf("Link(new-file)=%+v", got)
		}
	})
	t.Run("IncludeRemoved", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "accounts", "other.beancount"), "2024-01-01 open Expenses:Food\n2024-01-01 open Equity:Opening-Balances\n")
		if err := ix.Refresh(); err != nil {
			t.Fatal(err)
		}
		if slices.Contains(ix.Ledger().Files, filepath.Join(dir, "nested", "more.beancount")) || ix.Opened("Assets:Deep") {
			t.Errorf("files of a removed include still indexed: %q", ix.Ledger().Files)
		}
	})
	t.Run("MissingIncludeAndCycle", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "accounts", "other.beancount"), "include \"../main.beancount\"\ninclude \"gone/*.beancount\"\n")
		if err := ix.Refresh(); err != nil {
			t.Fatal(err)
		}
		if p := ix.Ledger().Problems; len(p) != 2 || !strings.Contains(p[0], "duplicate") || !strings.Contains(p[1], "does not match") {
			t.Errorf("Problems=%q, want a duplicate and a missing include", p)
		}
	})
}

func TestLoadMissingMain(t *testing.T) {
	if _, err := beancount.Load(filepath.Join(t.TempDir(), "nope.beancount")); err == nil {
		t.Fatal("Load of a missing main file succeeded")
	}
	ix := beancount.NewIndex(filepath.Join(t.TempDir(), "nope.beancount"), beancount.IndexOptions{})
	if err := ix.Refresh(); err == nil {
		t.Fatal("Refresh of a missing main file succeeded")
	}
}

func writeFile(tb testing.TB, path, text string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		tb.Fatal(err)
	}
}

func appendFile(tb testing.TB, path, text string) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := f.WriteString(text); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

// checkMatchesScan checks that the index's view of path equals a full scan
// of the file as it is now.
func checkMatchesScan(tb testing.TB, ix *beancount.Index, path string) {
	tb.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	want := beancount.Scan(src)
	got := ix.Blocks(path)
	if len(got) != len(want) {
		tb.Fatalf("index has %d blocks, a full scan %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			tb.Fatalf("block %d: index %+v\nfull scan %+v", i, got[i], want[i])
		}
	}
	f, ok := ix.File(path)
	if !ok {
		tb.Fatalf("File(%s) unknown", path)
	}
	if got, want := f.Sum, checksum.File(src); got != want {
		tb.Fatalf("Sum=%s, want %s", got, want)
	}
	all := checksum.Lines(string(checksum.Normalize(src)))
	for _, b := range want {
		slice := checksum.JoinSlice(all[b.Line-1 : b.Line-1+checksum.EntryLines(all, b.Line-1)])
		if !slices.Contains(lines(ix.SliceSum(checksum.String(slice))), b.Line) {
			tb.Fatalf("SliceSum misses the block at line %d", b.Line)
		}
	}
}

func TestIndexAppend(t *testing.T) {
	main := filepath.Join(t.TempDir(), "main.beancount")
	if err := ledgergen.File(main, ledgergen.Options{Transactions: 300, Seed: 2}); err != nil {
		t.Fatal(err)
	}
	ix := refreshed(t, main)
	steps := []struct {
		name, text string
	}{
		{"Entry", "\n2024-06-01 * \"Appended\" ^app-1\n  idempotency-key: \"ik-1\"\n  Expenses:Rent  1 USD\n  Assets:Cash\n"},
		{"PostingOfTheLastEntryWithoutNewline", "\n2024-06-02 * \"Open end\" ^app-2\n  Expenses:Rent  1 USD"},
		{"RestOfTheLastEntry", "\n  Assets:Cash\n"},
		{"Pushtag", "pushtag #late\n"},
		{"EntryUnderPushtag", "2024-06-03 * \"Tagged\" ^app-3\n  Expenses:Rent  1 USD\n  Assets:Cash\n"},
		{"Poptag", "poptag #late\n2024-06-04 * \"Untagged\" ^app-4\n"},
		{"StringAcrossTheAppend", "  memo: \"starts\n"},
		{"StringEnds", "ends ^not-a-link\"\n  Expenses:Rent  1 USD\n  Assets:Cash\n"},
		{"CRLF", "2024-06-05 * \"crlf\" ^app-5\r\n  Expenses:Rent  1 USD\r\n  Assets:Cash\r"},
		{"LFAfterCR", "\n2024-06-06 open Assets:New\n"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			full0, app0 := ix.ScanCounts()
			appendFile(t, main, st.text)
			if err := ix.Refresh(); err != nil {
				t.Fatal(err)
			}
			checkMatchesScan(t, ix, main)
			full, app := ix.ScanCounts()
			if st.name != "LFAfterCR" && st.name != "StringEnds" && (full != full0 || app != app0+1) {
				t.Errorf("scans full %d→%d, appended %d→%d; want one append scan", full0, full, app0, app)
			}
		})
	}
	if got := ix.Link("app-3"); len(got) != 1 {
		t.Fatalf("Link(app-3)=%v", got)
	}
	for _, b := range ix.Blocks(main) {
		if slices.Contains(b.Links, "app-3") && !slices.Contains(b.Tags, "late") {
			t.Errorf("entry under pushtag lacks the tag: %+v", b)
		}
		if slices.Contains(b.Links, "app-4") && slices.Contains(b.Tags, "late") {
			t.Errorf("entry after poptag has the tag: %+v", b)
		}
	}
	if got := ix.MetaValue("ik-1"); len(got) != 1 {
		t.Errorf("MetaValue(ik-1)=%v", got)
	}
}

func TestIndexManyAppendsFold(t *testing.T) {
	main := filepath.Join(t.TempDir(), "main.beancount")
	if err := ledgergen.File(main, ledgergen.Options{Transactions: 20, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	ix := refreshed(t, main)
	var sb strings.Builder
	for i := range 5000 {
		sb.WriteString("2024-07-01 * \"bulk " + strconv.Itoa(i) + "\" ^bulk-" + strings.Repeat("x", i%3) + "\n  Expenses:Rent  1 USD\n  Assets:Cash\n")
	}
	for range 3 {
		appendFile(t, main, sb.String())
		if err := ix.Refresh(); err != nil {
			t.Fatal(err)
		}
	}
	appendFile(t, main, "2024-07-02 * \"after fold\" ^after\n  Expenses:Rent  1 USD\n  Assets:Cash\n")
	if err := ix.Refresh(); err != nil {
		t.Fatal(err)
	}
	checkMatchesScan(t, ix, main)
	if got, want := len(ix.Link("bulk-")), 3*1667; got != want {
		t.Errorf("Link(bulk-) finds %d, want %d", got, want)
	}
}

func TestIndexRewrite(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "main.beancount")
	a := "2024-01-01 open Assets:A\n2024-01-02 * \"x\" ^aaa\n  Assets:A 1 USD\n"
	b := "2024-01-01 open Assets:B\n2024-01-02 * \"x\" ^bbb\n  Assets:B 1 USD\n"
	writeFile(t, main, a)
	ix := refreshed(t, main)
	fi, err := os.Stat(main)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("SameSizeSameMtime", func(t *testing.T) {
		// Rewritten in place, same size, and the clock did not move: only
		// the content tells, and the index compares it because the file
		// was modified around the time it was read.
		writeFile(t, main, b)
		if err := os.Chtimes(main, fi.ModTime(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
		if err := ix.Refresh(); err != nil {
			t.Fatal(err)
		}
		if len(ix.Link("bbb")) != 1 || len(ix.Link("aaa")) != 0 || !ix.Opened("Assets:B") {
			t.Errorf("index did not see the same-size rewrite: %+v", ix.Blocks(main))
		}
		checkMatchesScan(t, ix, main)
	})
	t.Run("Shrunk", func(t *testing.T) {
		writeFile(t, main, "2024-01-01 open Assets:C\n")
		if err := ix.Refresh(); err != nil {
			t.Fatal(err)
		}
		checkMatchesScan(t, ix, main)
		if ix.Opened("Assets:B") || !ix.Opened("Assets:C") {
			t.Errorf("Accounts()=%v after shrinking", ix.Accounts())
		}
	})
	t.Run("GrewButOldEndChanged", func(t *testing.T) {
		writeFile(t, main, "2024-01-01 open Assets:D\n2024-01-01 open Assets:E\n")
		if err := ix.Refresh(); err != nil {
			t.Fatal(err)
		}
		checkMatchesScan(t, ix, main)
	})
	t.Run("Replaced", func(t *testing.T) {
		// An editor that saves by rename gives a new inode.
		tmp := filepath.Join(dir, "tmp")
		writeFile(t, tmp, "2024-01-01 open Assets:F\n2024-01-01 open Assets:E\n")
		if err := os.Rename(tmp, main); err != nil {
			t.Fatal(err)
		}
		if err := ix.Refresh(); err != nil {
			t.Fatal(err)
		}
		checkMatchesScan(t, ix, main)
	})
	t.Run("RecentButSameContentIsNotRescanned", func(t *testing.T) {
		writeFile(t, main, "2024-01-01 open Assets:G\n")
		if err := ix.Refresh(); err != nil {
			t.Fatal(err)
		}
		full0, app0 := ix.ScanCounts()
		if err := ix.Refresh(); err != nil { // compares the content: same
			t.Fatal(err)
		}
		if full, app := ix.ScanCounts(); full != full0 || app != app0 {
			t.Errorf("a recently written, unchanged file was scanned again: full %d→%d, appended %d→%d", full0, full, app0, app)
		}
		checkMatchesScan(t, ix, main)
	})
	t.Run("Unchanged", func(t *testing.T) {
		old := time.Now().Add(-time.Hour)
		if err := os.Chtimes(main, old, old); err != nil {
			t.Fatal(err)
		}
		if err := ix.Refresh(); err != nil { // sees the new mtime
			t.Fatal(err)
		}
		full0, app0 := ix.ScanCounts()
		if err := ix.Refresh(); err != nil {
			t.Fatal(err)
		}
		if full, app := ix.ScanCounts(); full != full0 || app != app0 {
			t.Errorf("an unchanged file was read again: full %d→%d, appended %d→%d", full0, full, app0, app)
		}
	})
}

// TestIndexConcurrentReaders runs readers against a refresher; run with
// -race to check that readers never see a snapshot being built.
func TestIndexConcurrentReaders(t *testing.T) {
	main := filepath.Join(t.TempDir(), "main.beancount")
	if err := ledgergen.File(main, ledgergen.Options{Transactions: 200, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	ix := refreshed(t, main)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				_ = ix.Link("gen-10")
				_ = ix.Accounts()
				_ = ix.Blocks(main)
				_ = ix.MetaValue("x")
				_ = ix.SliceSum(checksum.String("x"))
				ix.Transactions(func(string, beancount.Block) bool { return true })
			}
		}()
	}
	for i := range 50 {
		appendFile(t, main, "2024-08-01 * \"c\" ^conc-"+strings.Repeat("1", i+1)+"\n  Expenses:Rent  1 USD\n  Assets:Cash\n")
		if err := ix.Refresh(); err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	wg.Wait()
	checkMatchesScan(t, ix, main)
}

// FuzzIndexAppend checks that indexing a file, appending to it and
// refreshing gives what a full scan of the whole file gives.
func FuzzIndexAppend(f *testing.F) {
	f.Add([]byte("2024-01-01 open A:B\n"), []byte("2024-01-02 * \"x\" ^l\n  A:B 1 USD\n"))
	f.Add([]byte("2024-01-02 * \"x\n"), []byte("y\" ^l\n  A:B 1 USD\n"))
	f.Add([]byte("pushtag #a\n2024-01-02 * \"x\"\r"), []byte("\n  A:B 1 USD\npoptag #a\n"))
	f.Add([]byte("2024-01-02 * \"x\" ^l\n  A:B"), []byte(" 1 USD\n  C:D\n\n2024-01-03 close A:B"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, prefix, suffix []byte) {
		main := filepath.Join(dir, "main.beancount")
		if err := os.WriteFile(main, prefix, 0o644); err != nil {
			t.Fatal(err)
		}
		ix := beancount.NewIndex(main, beancount.IndexOptions{})
		if err := ix.Refresh(); err != nil {
			t.Fatal(err)
		}
		appendFile(t, main, string(suffix))
		if err := ix.Refresh(); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(prefix, []byte("include")) || bytes.Contains(suffix, []byte("include")) {
			return // an include could name the file itself or others
		}
		checkMatchesScan(t, ix, main)
	})
}
