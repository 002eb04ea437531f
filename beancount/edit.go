package beancount

import (
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/favaproxy/favaproxy/checksum"
)

// ErrNoEntry reports that a file has no line where an entry slice was asked
// for.
var ErrNoEntry = errors.New("no entry at that line")

// The edits below are pure functions over a file's text as Fava reads it:
// UTF-8 with universal newlines (checksum.Normalize). They return the text
// Fava itself would write for the same edit, before newline translation:
// Fava from 1.27.3 on writes it with the newline of the file's first line
// ("\r\n" if the bytes up to the first "\n" end in "\r\n", else "\n"),
// which checksum.Newline and checksum.Denormalize reproduce unless a lone
// "\r" comes before the first "\n"; Fava 1.27.0 to 1.27.2 always wrote
// "\n". Handing the returned text to Fava's PUT source gives the same bytes
// as Fava's own slice edit would have written, on every Fava version (PUT
// source writes its text as it is up to 1.27.2, and with the first line's
// newline from 1.27.3 on).
//
// An entry slice is cut by Fava's line rule (checksum.EntryLines): the
// entry's first line, then every following line that is non-blank and starts
// with whitespace. The rule knows nothing of Beancount's syntax: a multi-line
// string whose continuation line starts in column 0 ends the slice there,
// and the edits below treat the rest of the string as text after the entry,
// just as Fava does.

// ReplaceSlice replaces the entry slice that starts at the 1-based line line
// of text with newText, as Fava's save_entry_slice does: the lines before
// the slice, then newText followed by one "\n", then the lines after the
// slice, all unchanged. newText is used verbatim: a trailing newline in it
// becomes a blank line, and a slice that was the file's unterminated last
// line comes back terminated. newSliceSum is what Fava answers, the SHA-256
// of newText as given (not of the slice Fava would cut from the new file,
// which differs when newText ends in "\n").
func ReplaceSlice(text string, line int, newText string) (out, newSliceSum string, err error) {
	lines := checksum.Lines(text)
	if line < 1 || line > len(lines) {
		return "", "", fmt.Errorf("replace slice at line %d of %d: %w", line, len(lines), ErrNoEntry)
	}
	start := line - 1
	end := start + checksum.EntryLines(lines, start)
	var b strings.Builder
	b.Grow(len(text) + len(newText) + 1)
	for _, l := range lines[:start] {
		b.WriteString(l)
	}
	b.WriteString(newText)
	b.WriteByte('\n')
	for _, l := range lines[end:] {
		b.WriteString(l)
	}
	return b.String(), checksum.String(newText), nil
}

// DeleteSlice removes the entry slice that starts at the 1-based line line
// of text and every blank (whitespace-only) line right after it, as Fava's
// delete_entry_slice does. Blank lines before the slice stay, so deleting a
// file's last entry leaves the blank line that preceded it.
func DeleteSlice(text string, line int) (string, error) {
	lines := checksum.Lines(text)
	if line < 1 || line > len(lines) {
		return "", fmt.Errorf("delete slice at line %d of %d: %w", line, len(lines), ErrNoEntry)
	}
	start := line - 1
	end := start + checksum.EntryLines(lines, start)
	for end < len(lines) && editBlank(lines[end]) {
		end++
	}
	var b strings.Builder
	b.Grow(len(text))
	for _, l := range lines[:start] {
		b.WriteString(l)
	}
	for _, l := range lines[end:] {
		b.WriteString(l)
	}
	return b.String(), nil
}

// FindSlices returns, in file order, the 1-based start lines of the dated
// directives of text whose Fava slice has the checksum sum (the hex SHA-256
// that checksum.String gives for the slice text). Only dated directives have
// an entry_hash in Fava, so candidates are the lines where Beancount's lexer
// would start one: a line beginning with a digit that is not inside a
// multi-line string. The string tracking follows Beancount 2's lexer: a
// '"' opens or closes a string (a backslash escapes the next character), ';'
// outside a string starts a comment, and a line that starts with one of
// *:#!&?% outside a string is skipped whole.
func FindSlices(text string, sum string) []int {
	lines := checksum.Lines(text)
	var found []int
	for _, i := range editEntryStarts(lines) {
		n := checksum.EntryLines(lines, i)
		if checksum.String(checksum.JoinSlice(lines[i:i+n])) == sum {
			found = append(found, i+1)
		}
	}
	return found
}

// editEntryStarts returns the 0-based indexes of the lines that start a dated
// directive, as described on FindSlices.
func editEntryStarts(lines []string) []int {
	var starts []int
	inString := false
	for i, line := range lines {
		if !inString && line != "" {
			switch c := line[0]; {
			case c >= '0' && c <= '9':
				starts = append(starts, i)
			case strings.IndexByte("*:#!&?%;", c) >= 0:
				continue
			}
		}
		inString = editScanStrings(line, inString)
	}
	return starts
}

// editScanStrings reports whether a string is still open at the end of line,
// given whether one was open at its start.
func editScanStrings(line string, inString bool) bool {
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case !inString && c == ';':
			return false
		}
	}
	return inString
}

// InsertAfter inserts block after the 1-based line n of text (0 inserts at
// the top; n past the end appends). block is one or more lines; a final
// "\n" is added when it lacks one, and an unterminated line n is
// terminated first so block starts on a line of its own. To put a directive
// after an entry, pass the entry's last line, start-1+checksum.EntryLines,
// not its start line, or the entry's metadata would end up under block.
func InsertAfter(text string, n int, block string) string {
	lines := checksum.Lines(text)
	n = max(0, min(n, len(lines)))
	var b strings.Builder
	b.Grow(len(text) + len(block) + 2)
	for _, l := range lines[:n] {
		b.WriteString(l)
	}
	if n > 0 && !strings.HasSuffix(lines[n-1], "\n") {
		b.WriteByte('\n')
	}
	b.WriteString(block)
	if !strings.HasSuffix(block, "\n") {
		b.WriteByte('\n')
	}
	for _, l := range lines[n:] {
		b.WriteString(l)
	}
	return b.String()
}

// AppendBlock appends block to text the way Fava appends a new entry to the
// end of a file (insert_entry without an insert-entry rule): a "\n", then
// block, which gets a final "\n" when it lacks one. A text ending in one
// newline thus gets one blank line before block; a text without a final
// newline only gets its last line terminated; an empty text gets a blank
// first line.
func AppendBlock(text string, block string) string {
	out := text + "\n" + block
	if !strings.HasSuffix(block, "\n") {
		out += "\n"
	}
	return out
}

// editBlank reports whether Python's str.strip leaves nothing of line,
// the test Fava uses for the blank lines it deletes after an entry.
func editBlank(line string) bool {
	return strings.TrimFunc(line, editSpace) == ""
}

// editSpace matches Python 3's str.isspace: Unicode White_Space plus the
// separators U+001C..U+001F.
func editSpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
}
