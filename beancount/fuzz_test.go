package beancount_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/favaproxy/favaproxy/beancount"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the committed seed corpora of the fuzz targets under testdata/fuzz")

// fuzzSeeds are inputs that reach the scanner's corners.
var fuzzSeeds = []string{
	"",
	"\r",
	"\"",
	"2024-01-01",
	"2024-01-01 * \"unterminated ^x\n2024-01-02 open A:B\n",
	"2024-01-01 * \"a\\\"b\\\\\" ^l-1 #t/2 ^ ^. #\n  k1: \"v\n\nw\"\n  A:B 1 USD ; ^c\n    pk: 1\n  ! C:D\n",
	"pushtag #a\npoptag #b\npoptag #a\npushmeta kk: 1\npopmeta kk:\n",
	"* org ^x\n# x\n; x\n  indented orphan ^x\n\f2024-01-01 open A:B\n",
	"2024/01/01 txn \"p\" \"n\" \"extra\"\r\n  ^l\r\n\t#t\r\n\r\n",
	"2024-01-01 open A:B\n\v form-feed continuation\n\u00a0nbsp\n",
	"2024-01-01 note A:B \"\\\n\"\n2024-01-01 custom \"x\" TRUE 1 USD \"s\"\n",
	"option \"title\" \"\\u00e9\"\ninclude \"x\"\nplugin\nfoo\n\xff\xfe ^bad\n",
	"\"\n  0\"", // a string spanning lines up to the end of a file without a final newline
}

func FuzzScan(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	for _, path := range ledgerFiles(f) {
		src, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		blocks := beancount.Scan(src)
		checkSpans(t, src, blocks)
		// A scan in two parts, split at the first line past the middle,
		// is the same scan.
		if i := bytes.IndexAny(src[len(src)/2:], "\r\n"); i >= 0 {
			_, want, _ := beancount.ScanSplit(src, -1)
			got, state, _ := beancount.ScanSplit(src, len(src)/2+i+1)
			if state != want || !reflect.DeepEqual(got, blocks) {
				t.Fatalf("split at %d: state %s, want %s; blocks %+v, want %+v", len(src)/2+i+1, state, want, got, blocks)
			}
		}
	})
}

// TestWriteFuzzCorpus writes the seeds above to testdata/fuzz/FuzzScan when
// run with -update-corpus, so that plain `go test` replays them as files too.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*updateCorpus {
		t.Skip("run with -update-corpus to rewrite the corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzScan")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds {
		text := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
