package beancount_test

import (
	"bytes"
	"testing"

	"github.com/favaproxy/favaproxy/beancount"
)

// TestScanLoneCRIsLinear pins a quadratic scan of files whose lines end in
// a lone CR: looking for the end of a line with IndexByte('\n') ran to the
// end of the file on every line, so this 4 MB file took minutes.
func TestScanLoneCRIsLinear(t *testing.T) {
	src := bytes.Repeat([]byte("; comment line\r2024-01-01 open Assets:A\r"), 100000)
	blocks := beancount.Scan(src)
	if got, want := len(blocks), 100000; got != want {
		t.Fatalf("got %d blocks, want %d", got, want)
	}
	if got, want := blocks[len(blocks)-1].Line, 200000; got != want {
		t.Fatalf("last block on line %d, want %d", got, want)
	}
}
