// Package checksum computes the checksums Fava uses to detect concurrent
// changes, and cuts entry slices exactly as Fava cuts them.
//
// Fava reads every ledger file as UTF-8 text with universal newlines ("\r\n"
// and "\r" become "\n") and hashes that text with SHA-256. An entry slice is
// the entry's first line plus every following line that is non-blank and
// starts with whitespace, joined, with trailing newlines stripped.
package checksum

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"unicode"
)

// Normalize returns b as Fava sees it: "\r\n" and lone "\r" become "\n".
// It returns b itself when there is nothing to translate.
func Normalize(b []byte) []byte {
	i := bytes.IndexByte(b, '\r')
	if i < 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	out = append(out, b[:i]...)
	for ; i < len(b); i++ {
		c := b[i]
		if c != '\r' {
			out = append(out, c)
			continue
		}
		out = append(out, '\n')
		if i+1 < len(b) && b[i+1] == '\n' {
			i++
		}
	}
	return out
}

// File returns Fava's checksum of a file whose raw bytes are b: the hex
// SHA-256 of its text with universal newlines.
func File(b []byte) string {
	return Bytes(Normalize(b))
}

// Bytes returns the hex SHA-256 of b as it is.
func Bytes(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// String returns the hex SHA-256 of the UTF-8 bytes of s, which is how Fava
// hashes an entry slice.
func String(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// Lines splits normalized text into lines the way Python's readlines does:
// each line keeps its trailing "\n"; the last line may lack one.
func Lines(text string) []string {
	if text == "" {
		return nil
	}
	lines := strings.SplitAfter(text, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	return lines
}

// EntryLines returns how many lines, starting at lines[start], make up the
// entry slice that begins there: the first line, then every following line
// that is not blank and starts with whitespace. It returns 0 when start is
// out of range.
func EntryLines(lines []string, start int) int {
	if start < 0 || start >= len(lines) {
		return 0
	}
	n := 1
	for _, line := range lines[start+1:] {
		if isBlank(line) || !startsWithSpace(line) {
			break
		}
		n++
	}
	return n
}

// Slice returns the entry slice starting at the 1-based line lineno of the
// normalized text, and false when the text has no such line.
func Slice(text string, lineno int) (string, bool) {
	lines := Lines(text)
	n := EntryLines(lines, lineno-1)
	if n == 0 {
		return "", false
	}
	return JoinSlice(lines[lineno-1 : lineno-1+n]), true
}

// JoinSlice joins the lines of an entry slice and strips trailing newlines.
func JoinSlice(lines []string) string {
	return strings.TrimRight(strings.Join(lines, ""), "\n")
}

// isBlank reports whether Python's str.strip would leave nothing of line.
func isBlank(line string) bool {
	return strings.TrimFunc(line, isPySpace) == ""
}

// startsWithSpace reports whether the first character of line matches
// Python's \s, as Fava's re.match(r"\S", line[0]) fails to.
func startsWithSpace(line string) bool {
	for _, r := range line {
		return isPySpace(r)
	}
	return false
}

// isPySpace matches Python 3's str.isspace for the runes Fava's rules test.
func isPySpace(r rune) bool {
	switch r {
	case '\x1c', '\x1d', '\x1e', '\x1f':
		return true
	}
	return unicode.IsSpace(r)
}

// Newline returns the newline sequence Fava writes a whole file back with,
// by Fava's rule (_file_newline_character): look at the bytes up to the
// first "\n"; "\r\n" if a "\r" precedes it, else "\n". A file without any
// "\n" (empty, or CR-only) gives "\n", Fava's os.linesep on the systems it
// runs on.
func Newline(raw []byte) string {
	i := bytes.IndexByte(raw, '\n')
	if i > 0 && raw[i-1] == '\r' {
		return "\r\n"
	}
	return "\n"
}

// Denormalize converts normalized text to the newline style nl, as Fava does
// when it writes a file back.
func Denormalize(text, nl string) string {
	if nl == "\n" || nl == "" {
		return text
	}
	return strings.ReplaceAll(text, "\n", nl)
}
