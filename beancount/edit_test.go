package beancount

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/internal/ledgergen"
)

// The expected outputs below are derived from Fava's fava/core/file.py
// (find_entry_lines, save_entry_slice, delete_entry_slice, insert_entry),
// identical in this respect from v1.27 to v1.30.16.

func TestReplaceSlice(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		line    int
		newText string
		want    string
	}{
		{"FollowedByBlank", "A\n  a1\n\nB\n", 1, "X\n  x1", "X\n  x1\n\nB\n"},
		{"FollowedByEntry", "A\n  a1\nB\n  b1\n", 1, "X", "X\nB\n  b1\n"},
		{"SecondEntry", "A\n  a1\nB\n  b1\n\nC\n", 3, "Y\n  y1\n  y2", "A\n  a1\nY\n  y1\n  y2\n\nC\n"},
		{"AtEOFWithoutNewline", "A\n\nB\n  b1", 3, "Y", "A\n\nY\n"},
		{"AtEOFWithNewline", "A\n\nB\n  b1\n", 3, "Y", "A\n\nY\n"},
		// Fava appends "\n" to the new text as it comes: a trailing
		// newline becomes a blank line.
		{"NewTextTrailingNewline", "A\n\nB\n", 1, "X\n", "X\n\n\nB\n"},
		{"NewTextEmpty", "A\n  a1\n\nB\n", 1, "", "\n\nB\n"},
		{"IndentedCommentInside", "A\n  ; c\n  a1\n\nB\n", 1, "X", "X\n\nB\n"},
		{"Column0CommentEndsSlice", "A\n; c\n  a1\n", 1, "X", "X\n; c\n  a1\n"},
		{"Metadata", "A\n  k: \"v\"\n  P  1 USD\n    pm: 1\n  Q\n\nB\n", 1, "X", "X\n\nB\n"},
		{"TabIndent", "A\n\ta1\nB\n", 1, "X", "X\nB\n"},
		{"NoBreakSpaceIndent", "A\n\u00a0a1\nB\n", 1, "X", "X\nB\n"},
		{"WhitespaceOnlyLineEndsSlice", "A\n  a1\n   \n  a2\n", 1, "X", "X\n   \n  a2\n"},
		// The slice rule is line based: the continuation of a multi-line
		// string in column 0 ends the slice, and stays in the file.
		{"MultiLineStringColumn0", "2024-01-02 * \"multi\nline\" \"x\"\n  Assets:A  1 USD\n", 1, "X",
			"X\nline\" \"x\"\n  Assets:A  1 USD\n"},
		{"MultiLineStringIndented", "2024-01-02 * \"multi\n  line\" \"x\"\n  Assets:A  1 USD\n\nB\n", 1, "X", "X\n\nB\n"},
		{"StartsOnBlankLine", "A\n\nB\n", 2, "X", "A\nX\nB\n"},
		{"StartsInsideEntry", "A\n  a1\n  a2\nB\n", 2, "X", "A\nX\nB\n"},
		{"OnlyLine", "A", 1, "A", "A\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, sum, err := ReplaceSlice(tt.text, tt.line, tt.newText)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("out=%q, want %q", got, tt.want)
			}
			if want := checksum.String(tt.newText); sum != want {
				t.Errorf("sum=%s, want sha256 of the new text %s", sum, want)
			}
		})
	}
}

func TestDeleteSlice(t *testing.T) {
	tests := []struct {
		name string
		text string
		line int
		want string
	}{
		{"BlankLinesAfterGo", "A\n  a1\n\n\nB\n", 1, "B\n"},
		{"FollowedByEntry", "A\n  a1\nB\n", 1, "B\n"},
		{"Middle", "A\n\nB\n  b1\n\nC\n", 3, "A\n\nC\n"},
		{"LastEntryKeepsBlankBefore", "A\n\nB\n  b1", 3, "A\n\n"},
		{"LastEntryTrailingBlanks", "A\n\nB\n  b1\n\n\n", 3, "A\n\n"},
		{"WhitespaceOnlyLinesGo", "A\n\nB\n  b1\n\n  \n\t\n\x1c\nC\n", 3, "A\n\nC\n"},
		{"OnlyEntry", "A\n  a1\n", 1, ""},
		{"IndentedCommentInside", "A\n  ; c\n  a1\n\nB\n", 1, "B\n"},
		{"Column0CommentStays", "A\n; c\n\nB\n", 1, "; c\n\nB\n"},
		// Fava leaves the rest of a multi-line string behind.
		{"MultiLineStringColumn0", "2024-01-02 * \"multi\nline\"\n  Assets:A  1 USD\n\nB\n", 1,
			"line\"\n  Assets:A  1 USD\n\nB\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DeleteSlice(tt.text, tt.line)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("out=%q, want %q", got, tt.want)
			}
		})
	}
}

func TestSliceLineOutOfRange(t *testing.T) {
	for _, tt := range []struct {
		text string
		line int
	}{
		{"", 1},
		{"A\n", 0},
		{"A\n", -1},
		{"A\n", 2},
		{"A\nB", 3},
	} {
		t.Run(fmt.Sprintf("%q@%d", tt.text, tt.line), func(t *testing.T) {
			if _, _, err := ReplaceSlice(tt.text, tt.line, "X"); !errors.Is(err, ErrNoEntry) {
				t.Errorf("ReplaceSlice err=%v, want ErrNoEntry", err)
			}
			if _, err := DeleteSlice(tt.text, tt.line); !errors.Is(err, ErrNoEntry) {
				t.Errorf("DeleteSlice err=%v, want ErrNoEntry", err)
			}
		})
	}
}

// TestReplaceSliceCRLF follows a CRLF file through what Fava does: read with
// universal newlines, edit, write with the first line's newline. A "\r\n"
// inside the new text is written as "\r\r\n", as Python's newline="\r\n"
// translation does.
func TestReplaceSliceCRLF(t *testing.T) {
	raw := []byte("A\r\n  a1\r\n\r\nB\r\n  b1\r\n")
	nl := checksum.Newline(raw)
	text := string(checksum.Normalize(raw))
	for _, tt := range []struct {
		name, newText, want string
	}{
		{"LFNewText", "X\n  x1", "X\r\n  x1\r\n\r\nB\r\n  b1\r\n"},
		{"CRLFNewText", "X\r\n  x1", "X\r\r\n  x1\r\n\r\nB\r\n  b1\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := ReplaceSlice(text, 1, tt.newText)
			if err != nil {
				t.Fatal(err)
			}
			if got := checksum.Denormalize(out, nl); got != tt.want {
				t.Errorf("written=%q, want %q", got, tt.want)
			}
		})
	}
	out, err := DeleteSlice(text, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := checksum.Denormalize(out, nl), "B\r\n  b1\r\n"; got != want {
		t.Errorf("written after delete=%q, want %q", got, want)
	}
}

// TestNewlineAsFava checks checksum.Newline against Fava's
// _file_newline_character (v1.27.3 and later) for files whose first line
// ends in "\n" or that have no "\n" at all (Fava then uses os.linesep, "\n"
// on the systems Fava runs on here).
func TestNewlineAsFava(t *testing.T) {
	for _, tt := range []struct{ raw, want string }{
		{"a\r\nb\n", "\r\n"},
		{"a\nb\r\n", "\n"},
		{"\r\n", "\r\n"},
		{"a", "\n"},
		{"", "\n"},
	} {
		if got := checksum.Newline([]byte(tt.raw)); got != tt.want {
			t.Errorf("Newline(%q)=%q, want %q", tt.raw, got, tt.want)
		}
	}
}

// editFindText exercises the lexing of FindSlices: duplicates, a multi-line
// string with a date in column 0, quotes in comments and org headings, an
// escaped quote.
const editFindText = `option "title" "x"
2024-01-01 open Assets:A
2024-01-02 * "dup"
  Assets:A  1 USD
  Assets:A  -1 USD

2024-01-02 * "dup"
  Assets:A  1 USD
  Assets:A  -1 USD
2024-01-03 * "multi
2024-01-04 note Assets:A in string
" "x"
  Assets:A  1 USD
  Assets:A  -1 USD
* org heading with a "quote
2024-01-05 note Assets:A "a;b" ; comment "quote
2024-01-06 note Assets:A "esc \" 2024-01-07 note
2024-01-07 note Assets:A x
"
2024-01-08 note Assets:A "last"`

func TestFindSlices(t *testing.T) {
	text := editFindText
	sumAt := func(line int) string {
		t.Helper()
		s, ok := checksum.Slice(text, line)
		if !ok {
			t.Fatalf("no line %d", line)
		}
		return checksum.String(s)
	}
	for _, tt := range []struct {
		name string
		sum  string
		want []int
	}{
		{"Open", sumAt(2), []int{2}},
		{"Duplicates", sumAt(3), []int{3, 7}},
		{"MultiLineString", sumAt(10), []int{10}},
		{"DateInsideString", sumAt(11), nil},
		{"AfterOrgHeadingQuote", sumAt(16), []int{16}},
		{"AfterEscapedQuote", sumAt(17), []int{17}},
		{"EscapedDateInsideString", sumAt(18), nil},
		{"LastLineUnterminated", sumAt(20), []int{20}},
		{"OptionIsNoEntry", sumAt(1), nil},
		{"Unknown", checksum.String("nothing"), nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := FindSlices(text, tt.sum); !slices.Equal(got, tt.want) {
				t.Errorf("FindSlices=%v, want %v", got, tt.want)
			}
		})
	}
}

func TestInsertAfter(t *testing.T) {
	for _, tt := range []struct {
		name  string
		text  string
		n     int
		block string
		want  string
	}{
		{"Top", "A\nB\n", 0, "X", "X\nA\nB\n"},
		{"Middle", "A\nB\n", 1, "X\n  x", "A\nX\n  x\nB\n"},
		{"End", "A\nB\n", 2, "X", "A\nB\nX\n"},
		{"PastEnd", "A\nB\n", 9, "X", "A\nB\nX\n"},
		{"Negative", "A\n", -3, "X", "X\nA\n"},
		{"UnterminatedLastLine", "A\nB", 2, "X", "A\nB\nX\n"},
		{"BlockWithNewline", "A\n", 1, "X\n", "A\nX\n"},
		{"EmptyText", "", 0, "X", "X\n"},
		{"AfterEntryWithMetadata", "2020-01-01 open A\n  m: 1\n\nB\n", 2, "2020-01-01 open C",
			"2020-01-01 open A\n  m: 1\n2020-01-01 open C\n\nB\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := InsertAfter(tt.text, tt.n, tt.block); got != tt.want {
				t.Errorf("InsertAfter=%q, want %q", got, tt.want)
			}
		})
	}
}

// TestAppendBlock pins Fava's insert_entry append: contents += "\n" + content,
// where content ends in "\n".
func TestAppendBlock(t *testing.T) {
	for _, tt := range []struct {
		name  string
		text  string
		block string
		want  string
	}{
		{"AfterNewline", "A\n", "X", "A\n\nX\n"},
		{"BlockWithNewline", "A\n", "X\n  x\n", "A\n\nX\n  x\n"},
		{"Unterminated", "A", "X", "A\nX\n"},
		{"AfterBlankLine", "A\n\n", "X", "A\n\n\nX\n"},
		{"Empty", "", "X", "\nX\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := AppendBlock(tt.text, tt.block); got != tt.want {
				t.Errorf("AppendBlock=%q, want %q", got, tt.want)
			}
		})
	}
}

// editLedger returns a synthetic ledger's text.
func editLedger(tb testing.TB, transactions int, seed uint64) string {
	tb.Helper()
	var b bytes.Buffer
	if err := ledgergen.Write(&b, ledgergen.Options{Transactions: transactions, Seed: seed}); err != nil {
		tb.Fatal(err)
	}
	return b.String()
}

// editSlices returns the slice text of every dated directive of text.
func editSlices(tb testing.TB, text string) (starts []int, texts []string) {
	tb.Helper()
	lines := checksum.Lines(text)
	for _, i := range editEntryStarts(lines) {
		starts = append(starts, i+1)
		texts = append(texts, checksum.JoinSlice(lines[i:i+checksum.EntryLines(lines, i)]))
	}
	return starts, texts
}

func TestGeneratedLedgerProperties(t *testing.T) {
	for seed := uint64(0); seed < 8; seed++ {
		text := editLedger(t, 25, seed)
		starts, texts := editSlices(t, text)
		if len(starts) < 25+len(ledgergen.Accounts) {
			t.Fatalf("seed %d: %d entries, want at least %d", seed, len(starts), 25+len(ledgergen.Accounts))
		}
		for k, line := range starts {
			sum := checksum.String(texts[k])
			if got, want := FindSlices(text, sum), []int{line}; !slices.Equal(got, want) {
				t.Fatalf("seed %d: FindSlices(slice at %d)=%v, want %v", seed, line, got, want)
			}
			out, newSum, err := ReplaceSlice(text, line, texts[k])
			if err != nil {
				t.Fatal(err)
			}
			if out != text || newSum != sum {
				t.Fatalf("seed %d: replacing the slice at %d by itself changed the file", seed, line)
			}
			out, err = DeleteSlice(text, line)
			if err != nil {
				t.Fatal(err)
			}
			_, rest := editSlices(t, out)
			if want := slices.Delete(slices.Clone(texts), k, k+1); !slices.Equal(rest, want) {
				t.Fatalf("seed %d: after deleting the slice at %d the other slices changed", seed, line)
			}
			if got := FindSlices(out, sum); got != nil {
				t.Fatalf("seed %d: deleted slice still found at %v", seed, got)
			}
		}
	}
}

// TestShiftedEntriesFound is what a stale entry_hash needs: after an earlier
// entry grew, every later entry is found again by its slice checksum, at
// its new line.
func TestShiftedEntriesFound(t *testing.T) {
	text := editLedger(t, 30, 3)
	starts, texts := editSlices(t, text)
	k := len(ledgergen.Accounts) + 2 // a transaction
	grown := texts[k] + "\n  added: \"1\"\n  other: \"2\""
	out, _, err := ReplaceSlice(text, starts[k], grown)
	if err != nil {
		t.Fatal(err)
	}
	for j := k + 1; j < len(starts); j++ {
		if got, want := FindSlices(out, checksum.String(texts[j])), []int{starts[j] + 2}; !slices.Equal(got, want) {
			t.Fatalf("entry %d: found at %v, want %v", j, got, want)
		}
	}
	if got, want := FindSlices(out, checksum.String(grown)), []int{starts[k]}; !slices.Equal(got, want) {
		t.Fatalf("grown entry found at %v, want %v", got, want)
	}
}

// editPython returns a Python interpreter that can import Beancount, or
// skips (fails under CI) when there is none.
func editPython(tb testing.TB) string {
	tb.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(py, "-c", "import beancount.parser.parser").Run() == nil {
			return py
		}
	}
	editMissing(tb, "python3 with the beancount module")
	return ""
}

func editMissing(tb testing.TB, what string) {
	tb.Helper()
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s not found", what)
	}
	tb.Skipf("%s not found", what)
}

// TestEntryStartsAsBeancount compares the candidate lines of FindSlices with
// the line numbers Beancount's own parser gives the dated directives.
func TestEntryStartsAsBeancount(t *testing.T) {
	py := editPython(t)
	const tricky = "2024-01-01 open Assets:A\n" +
		"2024-01-02 * \"multi\n2024-01-03 line\" \"x\"\n  Assets:A  1 USD\n  Assets:A  -1 USD\n" +
		"* 2024 \"org\n" +
		"2024-01-04 note Assets:A \"n;x\" ; \"c\n" +
		"2024-01-05 note Assets:A \"esc \\\" 2024\n2024-01-06 quote\"\n" +
		"# \"hash\n" +
		"2024-01-07 note Assets:A \"y\"\n"
	for name, text := range map[string]string{
		"Tricky":    tricky,
		"Find":      editFindText,
		"Generated": editLedger(t, 60, 9),
	} {
		t.Run(name, func(t *testing.T) {
			script := "import sys\nfrom beancount.parser import parser\n" +
				"entries, errors, _ = parser.parse_string(sys.stdin.read())\n" +
				"assert not errors, errors\n" +
				"print(' '.join(str(e.meta['lineno']) for e in entries))\n"
			cmd := exec.Command(py, "-c", script)
			cmd.Stdin = strings.NewReader(text)
			outb, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("beancount parser: %v\n%s", err, outb)
			}
			var want []int
			for _, f := range strings.Fields(string(outb)) {
				n, err := strconv.Atoi(f)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, n)
			}
			slices.Sort(want)
			want = slices.Compact(want)
			got, _ := editSlices(t, text)
			if !slices.Equal(got, want) {
				t.Errorf("entry starts=%v\nbeancount   =%v", got, want)
			}
		})
	}
}

// editBeanCheck reports bean-check's verdict on text.
func editBeanCheck(tb testing.TB, text string) (ok bool, output string) {
	tb.Helper()
	bin, err := exec.LookPath("bean-check")
	if err != nil {
		editMissing(tb, "bean-check")
	}
	path := filepath.Join(tb.TempDir(), "ledger.beancount")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		tb.Fatal(err)
	}
	out, err := exec.Command(bin, path).CombinedOutput()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		tb.Fatal(err)
	}
	return err == nil && len(out) == 0, string(out)
}

// TestEditsStayValid checks with bean-check that edits of a valid ledger
// give a valid ledger, and that the check does tell a broken one.
func TestEditsStayValid(t *testing.T) {
	text := editLedger(t, 40, 5)
	if ok, out := editBeanCheck(t, text); !ok {
		t.Fatalf("generated ledger invalid:\n%s", out)
	}
	starts, texts := editSlices(t, text)
	var txns, opens []int
	for k, s := range texts {
		switch {
		case strings.Contains(s, " open "):
			opens = append(opens, k)
		case len(s) > 11 && (s[11] == '*' || s[11] == '!'):
			txns = append(txns, k)
		}
	}

	// Delete every fourth transaction, last first so lines stay put.
	edited := text
	for i := len(txns) - 1; i >= 0; i -= 4 {
		var err error
		if edited, err = DeleteSlice(edited, starts[txns[i]]); err != nil {
			t.Fatal(err)
		}
	}
	// Rewrite a transaction, then open an account after the last open and
	// append a transaction that uses it.
	k := txns[1]
	newTxn := strings.Replace(texts[k], "\"Purchase", "\"Edited purchase", 1) + "\n  edited: TRUE"
	edited, _, err := ReplaceSlice(edited, starts[k], newTxn)
	if err != nil {
		t.Fatal(err)
	}
	edited = InsertAfter(edited, starts[opens[len(opens)-1]], "2020-01-01 open Assets:New USD")
	edited = AppendBlock(edited, "2021-06-01 * \"new\"\n  Assets:New  1.00 USD\n  Equity:Opening-Balances")
	if ok, out := editBeanCheck(t, edited); !ok {
		t.Fatalf("edited ledger invalid:\n%s\n%s", out, edited)
	}

	broken, err := DeleteSlice(text, starts[opens[0]])
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := editBeanCheck(t, broken); ok {
		t.Fatal("bean-check accepted a ledger without an account's open directive")
	}
}

func FuzzReplaceSlice(f *testing.F) {
	f.Add("A\n  a1\n\nB\n", 1, "X")
	f.Add("A\n\nB\n  b1", 3, "Y\n")
	f.Add("2024-01-02 * \"multi\nline\"\n  Assets:A  1 USD\n", 1, "")
	f.Add("A\r\n\tb\r\n\u00a0c\n\x1c\n", 2, "Z\r\n")
	f.Add("", 1, "X")
	f.Add(editLedger(f, 3, 1), 12, "2020-01-01 * \"x\"")
	f.Fuzz(func(t *testing.T, text string, line int, newText string) {
		lines := checksum.Lines(text)
		out, sum, err := ReplaceSlice(text, line, newText)
		if line < 1 || line > len(lines) {
			if !errors.Is(err, ErrNoEntry) {
				t.Fatalf("line %d of %d: err=%v, want ErrNoEntry", line, len(lines), err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if sum != checksum.String(newText) {
			t.Fatal("sum is not the new text's checksum")
		}
		end := line - 1 + checksum.EntryLines(lines, line-1)
		before := strings.Join(lines[:line-1], "")
		after := strings.Join(lines[end:], "")
		if want := before + newText + "\n" + after; out != want {
			t.Fatalf("out=%q, want %q", out, want)
		}

		old, _ := checksum.Slice(text, line)
		same, _, err := ReplaceSlice(text, line, old)
		if err != nil {
			t.Fatal(err)
		}
		want := text
		if end == len(lines) && !strings.HasSuffix(text, "\n") {
			want += "\n" // Fava terminates an unterminated last slice.
		}
		if same != want {
			t.Fatalf("replacing the slice by itself: out=%q, want %q", same, want)
		}
	})
}

func FuzzFindSlices(f *testing.F) {
	f.Add("2024-01-01 open A\n  m: 1\n\n2024-01-01 open A\n  m: 1\n")
	f.Add("2024-01-02 * \"a\n2024-01-03 b\"\n")
	f.Add("* \"\n2024-01-01 x ; \"\n")
	f.Fuzz(func(t *testing.T, text string) {
		lines := checksum.Lines(text)
		for _, i := range editEntryStarts(lines) {
			s, _ := checksum.Slice(text, i+1)
			found := FindSlices(text, checksum.String(s))
			if !slices.Contains(found, i+1) {
				t.Fatalf("slice at %d not found: %v", i+1, found)
			}
			for _, l := range found {
				if got, _ := checksum.Slice(text, l); got != s {
					t.Fatalf("found %d with slice %q, want %q", l, got, s)
				}
			}
		}
	})
}
