package beancount_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/internal/ledgergen"
)

// ledgerFiles returns every Beancount file under testdata.
func ledgerFiles(tb testing.TB) []string {
	tb.Helper()
	var files []string
	for _, root := range []string{"ledgers", "fava-vectors"} {
		err := filepath.WalkDir(filepath.Join("..", "testdata", root), func(path string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(path, ".beancount") {
				files = append(files, path)
			}
			return err
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	if len(files) == 0 {
		tb.Fatal("no ledger files in testdata")
	}
	return files
}

// checkSpans checks the invariants of Scan's blocks against src: spans
// inside the file, ordered, non-overlapping, each [Line, EndLine] exactly
// the slice Fava cuts, Offset at the start of Line, Text lines Line to
// LastLine from there, and links and tags within Beancount's grammar.
func checkSpans(tb testing.TB, src []byte, blocks []beancount.Block) {
	tb.Helper()
	text := string(checksum.Normalize(src))
	lines := checksum.Lines(text)
	nlines := max(len(lines), 1)
	prev := 0
	atOff, atLine := 0, 1
	for i, b := range blocks {
		if b.Line < 1 || b.Line > nlines || b.EndLine < b.Line || b.LastLine < b.Line || b.LastLine > nlines || b.EndLine > nlines {
			tb.Fatalf("block %d %+v: span outside the file of %d lines", i, b, nlines)
		}
		if b.Line <= prev {
			tb.Fatalf("block %d starts at line %d, not after the previous block's end %d", i, b.Line, prev)
		}
		prev = max(b.EndLine, b.LastLine)
		if n := checksum.EntryLines(lines, b.Line-1); b.Line+n-1 != b.EndLine {
			tb.Fatalf("block %d at line %d: EndLine %d, Fava's slice ends at %d", i, b.Line, b.EndLine, b.Line+n-1)
		}
		if b.Offset < 0 || b.Offset > len(src) || b.Offset > 0 && src[b.Offset-1] != '\n' && src[b.Offset-1] != '\r' {
			tb.Fatalf("block %d: Offset %d is not at the start of a line", i, b.Offset)
		}
		if b.Offset < atOff {
			tb.Fatalf("block %d: Offset %d before the previous block's %d", i, b.Offset, atOff)
		}
		atLine += countBreaks(src[atOff:b.Offset])
		atOff = b.Offset
		if got := atLine; got != b.Line {
			tb.Fatalf("block %d: Offset %d is on line %d, Line is %d", i, b.Offset, got, b.Line)
		}
		if !strings.HasPrefix(string(src[b.Offset:]), b.Text) || countBreaks([]byte(b.Text)) != b.LastLine-b.Line {
			tb.Fatalf("block %d: Text %q is not lines %d to %d at offset %d", i, b.Text, b.Line, b.LastLine, b.Offset)
		}
		if rest := src[b.Offset+len(b.Text):]; len(rest) > 0 && rest[0] != '\n' && rest[0] != '\r' || b.Text != "" && b.Text[len(b.Text)-1] == '\r' && len(rest) > 0 && rest[0] == '\n' {
			tb.Fatalf("block %d: Text %q does not end at the end of line %d", i, b.Text, b.LastLine)
		}
		for _, p := range b.Postings() {
			if p.Text == "" || strings.ContainsAny(p.Text, "\n\r") && !strings.Contains(p.Text, "\"") {
				tb.Fatalf("block %d: posting %+v", i, p)
			}
		}
		for _, l := range b.Links {
			if !linkRE.MatchString(l) {
				tb.Fatalf("block %d: link %q outside Beancount's grammar", i, l)
			}
		}
		for _, l := range b.Tags {
			if !linkRE.MatchString(l) {
				tb.Fatalf("block %d: tag %q outside Beancount's grammar", i, l)
			}
		}
	}
}

var linkRE = regexp.MustCompile(`^[A-Za-z0-9\-_/.]+$`)

// countBreaks counts the line breaks in b (universal newlines).
func countBreaks(b []byte) int {
	n := 0
	for i, c := range b {
		if c == '\n' || c == '\r' && (i+1 >= len(b) || b[i+1] != '\n') {
			n++
		}
	}
	return n
}

func TestScanSpansMatchFava(t *testing.T) {
	gen := filepath.Join(t.TempDir(), "gen.beancount")
	if err := ledgergen.File(gen, ledgergen.Options{Transactions: 2000, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	for _, path := range append(ledgerFiles(t), gen) {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blocks := beancount.Scan(src)
		if len(blocks) == 0 {
			t.Errorf("%s: no blocks", path)
		}
		checkSpans(t, src, blocks)
	}
}

func TestScanFileEqualsScan(t *testing.T) {
	for _, path := range ledgerFiles(t) {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := beancount.ScanFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if want := beancount.Scan(src); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: ScanFile differs from Scan", path)
		}
	}
	if _, err := beancount.ScanFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("ScanFile of a missing file succeeded")
	}
}

func TestScanFavaVectors(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "testdata", "fava-vectors", "vectors.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vectors []struct {
		File   string
		Slices []struct {
			Lineno    int
			Slice     string
			Sha256sum string
		}
	}
	if err := json.Unmarshal(raw, &vectors); err != nil {
		t.Fatal(err)
	}
	for _, v := range vectors {
		src, err := os.ReadFile(filepath.Join("..", "testdata", "fava-vectors", v.File))
		if err != nil {
			t.Fatal(err)
		}
		text := string(checksum.Normalize(src))
		byLine := map[int]beancount.Block{}
		for _, b := range beancount.Scan(src) {
			byLine[b.Line] = b
		}
		for _, s := range v.Slices {
			b, ok := byLine[s.Lineno]
			if !ok {
				t.Errorf("%s:%d: no block", v.File, s.Lineno)
				continue
			}
			lines := checksum.Lines(text)
			got := checksum.JoinSlice(lines[b.Line-1 : b.EndLine])
			if got != s.Slice || checksum.String(got) != s.Sha256sum {
				t.Errorf("%s:%d: slice %q, want %q", v.File, s.Lineno, got, s.Slice)
			}
		}
	}
}

func TestScan(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		want []beancount.Block // only the fields set here are compared
		// postings are the Postings of the first block, as account and
		// text, if set.
		postings []beancount.Posting
	}{
		{
			name: "LinksInCommentsAndStringsDoNotCount",
			src: "; ^c1\n* heading ^c2\n# hash ^c3\n" +
				"2024-01-02 * \"p ^s1\" \"n #s2\" ^real ; ^c4\n  memo: \"^s3\"\n  kind: #tagval\n  A:B 1 USD ; #c5\n  C:D\n",
			want: []beancount.Block{{Kind: beancount.KindTransaction, Line: 4, EndLine: 8, LastLine: 8, Date: "2024-01-02", Flag: "*",
				Payee: "p ^s1", Narration: "n #s2", Links: []string{"real"},
				Meta: []beancount.Meta{{Key: "memo", Value: "^s3", Line: 5}, {Key: "kind", Value: "#tagval", Line: 6}},
				Text: "2024-01-02 * \"p ^s1\" \"n #s2\" ^real ; ^c4\n  memo: \"^s3\"\n  kind: #tagval\n  A:B 1 USD ; #c5\n  C:D"}},
			postings: []beancount.Posting{{Account: "A:B", Text: "A:B 1 USD"}, {Account: "C:D", Text: "C:D"}},
		},
		{
			name: "MultiLineStringIsPartOfItsBlock",
			src:  "2024-01-02 * \"one\ntwo ^no\n\nthree\" ^yes\n  A:B 1 USD\n  C:D\n2024-01-03 open A:B\n",
			want: []beancount.Block{
				{Kind: beancount.KindTransaction, Line: 1, EndLine: 1, LastLine: 6, Narration: "one\ntwo ^no\n\nthree", Links: []string{"yes"},
					Text: "2024-01-02 * \"one\ntwo ^no\n\nthree\" ^yes\n  A:B 1 USD\n  C:D"},
				{Kind: beancount.KindOpen, Line: 7, EndLine: 7, LastLine: 7, Accounts: []string{"A:B"}, Text: "2024-01-03 open A:B"},
			},
			postings: []beancount.Posting{{Account: "A:B", Text: "A:B 1 USD"}, {Account: "C:D", Text: "C:D"}},
		},
		{
			name: "CRLF",
			src:  "2024-01-02 * \"a\r\nb\" ^l1\r\n  k1: \"v\"\r\n  A:B  1 USD\r\n\r\n2024-01-03 close A:B\r\n",
			want: []beancount.Block{
				{Kind: beancount.KindTransaction, Line: 1, EndLine: 1, LastLine: 4, Narration: "a\nb", Links: []string{"l1"}, Meta: []beancount.Meta{{Key: "k1", Value: "v", Line: 3}},
					Text: "2024-01-02 * \"a\r\nb\" ^l1\r\n  k1: \"v\"\r\n  A:B  1 USD"},
				{Kind: beancount.KindClose, Line: 6, EndLine: 6, LastLine: 6, Accounts: []string{"A:B"}, Text: "2024-01-03 close A:B"},
			},
			postings: []beancount.Posting{{Account: "A:B", Text: "A:B 1 USD"}},
		},
		{
			name: "PushtagPoptag",
			src:  "pushtag #a\npushtag #b\n2024-01-01 * \"x\" #c\n  A:B 1 USD\npoptag #a\n2024-01-02 txn \"y\"\npoptag #b\n2024-01-03 * \"z\"\n",
			want: []beancount.Block{
				{Kind: beancount.KindPushtag, Tags: []string{"a"}, Value: "a"},
				{Kind: beancount.KindPushtag, Tags: []string{"b"}, Value: "b"},
				{Kind: beancount.KindTransaction, Tags: []string{"c", "a", "b"}, Flag: "*"},
				{Kind: beancount.KindPoptag, Tags: []string{"a"}, Value: "a"},
				{Kind: beancount.KindTransaction, Tags: []string{"b"}, Flag: "*"},
				{Kind: beancount.KindPoptag, Tags: []string{"b"}, Value: "b"},
				{Kind: beancount.KindTransaction, Flag: "*"},
			},
		},
		{
			name: "LinkPrefixesAreDistinct",
			src:  "2024-01-01 * \"x\" ^k1 ^k10 ^k1\n  #t1 #t1\n  A:B 1 USD\n  ^late\n",
			want: []beancount.Block{{Kind: beancount.KindTransaction, Links: []string{"k1", "k10"}, Tags: []string{"t1"}}},
		},
		{
			name: "UndatedDirectives",
			src:  "option \"title\" \"My \\\"Books\\\"\"\ninclude \"sub/*.beancount\"\nplugin \"beancount.plugins.auto\" \"cfg\"\npushmeta location: \"home\"\npopmeta location:\n",
			want: []beancount.Block{
				{Kind: beancount.KindOption, Option: "title", Value: "My \"Books\""},
				{Kind: beancount.KindInclude, Value: "sub/*.beancount"},
				{Kind: beancount.KindPlugin, Value: "beancount.plugins.auto"},
				{Kind: beancount.KindPushmeta, Meta: []beancount.Meta{{Key: "location", Value: "home", Line: 4}}},
				{Kind: beancount.KindPopmeta, Meta: []beancount.Meta{{Key: "location", Line: 5}}},
			},
		},
		{
			name: "DatedDirectives",
			src: "2024/01/01 open Assets:Café  USD,EUR \"FIFO\"\n  idempotency-key: \"k\"\n" +
				"2024-01-02 balance Assets:Café 1 USD\n2024-01-02 pad Assets:Café Equity:O\n" +
				"2024-01-02 note Assets:Café \"said \\\"hi\\\"\"\n2024-01-02 document Assets:Café \"a.pdf\" ^d\n" +
				"2024-01-02 price EUR 1.1 USD\n2024-01-02 commodity EUR\n2024-01-02 event \"loc\" \"home\"\n" +
				"2024-01-02 query \"q\" \"SELECT 1\"\n2024-01-02 custom \"budget\" Assets:Café 1 USD\n2024-01-02 custom \"fava-option\" \"insert-entry\" \"Expenses\"\n2024-01-02 bogus x\nfoo bar\n",
			want: []beancount.Block{
				{Kind: beancount.KindOpen, Date: "2024-01-01", Accounts: []string{"Assets:Café"}, Currencies: []string{"USD", "EUR"}, Meta: []beancount.Meta{{Key: "idempotency-key", Value: "k", Line: 2}}},
				{Kind: beancount.KindBalance, Accounts: []string{"Assets:Café"}},
				{Kind: beancount.KindPad, Accounts: []string{"Assets:Café", "Equity:O"}},
				{Kind: beancount.KindNote, Accounts: []string{"Assets:Café"}, Narration: "said \"hi\""},
				{Kind: beancount.KindDocument, Accounts: []string{"Assets:Café"}, Value: "a.pdf", Links: []string{"d"}},
				{Kind: beancount.KindPrice, Currencies: []string{"EUR"}},
				{Kind: beancount.KindCommodity, Currencies: []string{"EUR"}},
				{Kind: beancount.KindEvent, Value: "loc", Narration: "home"},
				{Kind: beancount.KindQuery, Value: "q"},
				{Kind: beancount.KindCustom, Value: "budget"},
				{Kind: beancount.KindCustom, Value: "fava-option", Narration: "insert-entry"},
				{Kind: beancount.KindUnknown, Date: "2024-01-02"},
				{Kind: beancount.KindUnknown},
			},
		},
		{
			name: "UnterminatedQuoteEndsWithItsLine",
			src:  "2024-01-02 note A:B \"abc ^x\n2024-01-03 open A:C\n",
			want: []beancount.Block{
				{Kind: beancount.KindNote, Line: 1, EndLine: 1, LastLine: 1},
				{Kind: beancount.KindOpen, Line: 2, Accounts: []string{"A:C"}},
			},
		},
		{
			name:     "TabsAndNoTrailingNewline",
			src:      "2024-01-02\t!\t\"x\"\t#t\n\tA:B\t1 USD\n\t! C:D",
			want:     []beancount.Block{{Kind: beancount.KindTransaction, Flag: "!", Line: 1, EndLine: 3, LastLine: 3, Tags: []string{"t"}, Text: "2024-01-02\t!\t\"x\"\t#t\n\tA:B\t1 USD\n\t! C:D"}},
			postings: []beancount.Posting{{Account: "A:B", Text: "A:B 1 USD"}, {Account: "C:D", Text: "! C:D"}},
		},
		{
			name:     "PostingMetadataIsNotEntryMetadata",
			src:      "2024-01-02 * \"x\"\n  aa: 1\n  A:B 1 USD\n  bb: 2\n      cc: \"3\"\n  C:D\n",
			want:     []beancount.Block{{Kind: beancount.KindTransaction, Meta: []beancount.Meta{{Key: "aa", Value: "1", Line: 2}}}},
			postings: []beancount.Posting{{Account: "A:B", Text: "A:B 1 USD"}, {Account: "C:D", Text: "C:D"}},
		},
		{
			name: "IgnoredLineStarts",
			src:  "P ^x \"open\n! ^x\n:x\n2024-01-01 open A:B\n",
			want: []beancount.Block{{Kind: beancount.KindOpen, Line: 4}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := beancount.Scan([]byte(tc.src))
			checkSpans(t, []byte(tc.src), got)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d blocks, want %d: %+v", len(got), len(tc.want), got)
			}
			for i, w := range tc.want {
				compareSet(t, i, got[i], w)
				if got[i].Kind != beancount.KindTransaction && got[i].Postings() != nil {
					t.Errorf("block %d, a %s, has postings", i, got[i].Kind)
				}
			}
			if tc.postings != nil {
				if p := got[0].Postings(); !reflect.DeepEqual(p, tc.postings) {
					t.Errorf("postings %q, want %q", p, tc.postings)
				}
			}
		})
	}
}

// compareSet compares the fields of want that are not zero with got.
func compareSet(t *testing.T, i int, got, want beancount.Block) {
	t.Helper()
	g, w := reflect.ValueOf(got), reflect.ValueOf(want)
	for f := 0; f < w.NumField(); f++ {
		if w.Field(f).IsZero() {
			continue
		}
		if !reflect.DeepEqual(g.Field(f).Interface(), w.Field(f).Interface()) {
			t.Errorf("block %d: %s=%#v, want %#v", i, w.Type().Field(f).Name, g.Field(f).Interface(), w.Field(f).Interface())
		}
	}
}

// splitInputs are ledgers whose split scans TestScanSplit compares: the
// fuzz seeds, the test ledgers, and cases built to straddle a split.
func splitInputs(tb testing.TB) map[string][]byte {
	in := map[string][]byte{
		"pushtag across": []byte("2024-01-01 open A:B\n\npushtag #p\n\n2024-01-02 * \"x\"\n  A:B 1 USD\n\n2024-01-03 * \"y\"\n  A:B 1 USD\n\npoptag #p\n2024-01-04 * \"z\" #q\n  A:B 1 USD\n"),
		"string across":  []byte("2024-01-01 * \"a\n\n2024-01-02 open A:B\n\" ^l1\n  A:B 1 USD\n2024-01-03 * \"b\" ^l2\n  k: \"m\n2024\"\n  A:B 1 USD\n"),
		"unterminated":   []byte("2024-01-01 open A:B\n2024-01-02 * \"open ^x\n2024-01-03 * \"ok\" ^y\n  A:B 1 USD\n"),
		"crlf and meta":  []byte("2024-01-01 open A:B\r\n  k: 1\r\n\r\n2024-01-02 * \"p\" \"n\"\r\n  m: \"v\"\r\n  A:B  1  USD\r\n\r\n2024-01-03 balance A:B 1 USD\r\n"),
	}
	// More one-line blocks than a part's list is sized for.
	in["one-line blocks"] = []byte(strings.Repeat("2024-01-01 open A:B\n", 60) + "2024-01-02 * \"x\"\n  A:B 1 USD\n" + strings.Repeat("2024-01-03 close A:B\n", 60))
	for i, s := range fuzzSeeds {
		in[fmt.Sprintf("seed %d", i)] = []byte(s)
	}
	for _, path := range ledgerFiles(tb) {
		src, err := os.ReadFile(path)
		if err != nil {
			tb.Fatal(err)
		}
		in[path] = src
	}
	return in
}

// TestScanSplit scans each input in two parts split at every offset and
// compares the blocks and the end state with a scan in one part: a split
// that cannot be joined must fall back, one that can must join exactly.
func TestScanSplit(t *testing.T) {
	joins := 0
	for name, src := range splitInputs(t) {
		want, wantState, _ := beancount.ScanSplit(src, -1)
		for split := 1; split < len(src); split++ {
			got, state, joined := beancount.ScanSplit(src, split)
			if joined {
				joins++
			}
			if state != wantState || !reflect.DeepEqual(got, want) {
				t.Fatalf("%s split at %d (joined %v): state %s, want %s\ngot  %+v\nwant %+v", name, split, joined, state, wantState, got, want)
			}
		}
	}
	if joins == 0 {
		t.Fatal("no split was joined")
	}
}
