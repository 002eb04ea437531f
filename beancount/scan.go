package beancount

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"os"
	"runtime"
	"strings"
	"unicode/utf8"
	"unsafe"

	"github.com/favaproxy/favaproxy"
)

// Kind names the kind of a directive block.
type Kind string

// The kinds of blocks Scan reports.
const (
	KindTransaction Kind = "transaction"
	KindOpen        Kind = "open"
	KindClose       Kind = "close"
	KindBalance     Kind = "balance"
	KindNote        Kind = "note"
	KindDocument    Kind = "document"
	KindPrice       Kind = "price"
	KindPad         Kind = "pad"
	KindEvent       Kind = "event"
	KindQuery       Kind = "query"
	KindCustom      Kind = "custom"
	KindCommodity   Kind = "commodity"
	KindOption      Kind = "option"
	KindInclude     Kind = "include"
	KindPlugin      Kind = "plugin"
	KindPushtag     Kind = "pushtag"
	KindPoptag      Kind = "poptag"
	KindPushmeta    Kind = "pushmeta"
	KindPopmeta     Kind = "popmeta"
	// KindUnknown is a line at the start of a line that Beancount would
	// reject (an unknown keyword, a malformed date), with its continuation.
	KindUnknown Kind = "unknown"
)

// Meta is one metadata entry of a directive.
type Meta struct {
	// Key is the metadata key without its colon.
	Key string
	// Value is a string value unquoted and unescaped; any other value
	// (number, amount, date, account, tag, bool) as written, with runs of
	// whitespace collapsed and a trailing comment dropped.
	Value string
	// Line is the 1-based line of the key.
	Line int
}

// Block is one directive of a ledger file as Beancount reads it, with the
// span Fava uses for it.
type Block struct {
	Kind Kind
	// Line and EndLine are 1-based; lines Line through EndLine are the slice
	// Fava cuts for the entry: its first line plus every following line that
	// is non-blank and starts with whitespace.
	Line, EndLine int
	// LastLine is the last line Beancount reads as part of the directive.
	// It differs from EndLine when a string spans lines or a line inside
	// the directive starts with an unusual space character.
	LastLine int
	// Offset is the byte offset in the scanned source where Line starts.
	Offset int

	// Date is the directive's date as YYYY-MM-DD (a date written with '/'
	// is given with '-'); empty for undated directives.
	Date string
	// Flag is a transaction's flag ("*", "!", ...); "txn" is reported as "*".
	Flag string
	// Payee and Narration are a transaction's strings, unescaped. A note's
	// comment, an event's description and a custom directive's second
	// string (after its type) are reported as Narration.
	Payee, Narration string
	// Links and Tags are without '^' and '#', each listed once, in order of
	// appearance. Tags of transactions and documents include the tags of
	// pushtag directives in effect, as Beancount adds them.
	Links, Tags []string
	// Meta is the directive's own metadata (a transaction's metadata before
	// its first posting; later key/value lines belong to postings).
	// pushmeta is not applied. For pushmeta/popmeta it holds the pushed key.
	Meta []Meta
	// Accounts are the accounts of open, close, balance, note, document and
	// pad directives. A transaction's are in its Postings.
	Accounts []string
	// Currencies are an open's constraint currencies, a commodity's
	// currency, and a price's base currency.
	Currencies []string
	// Value is the first argument of option (its value, see Option),
	// include and plugin, unquoted; a document's file name; a pushtag's or
	// poptag's tag.
	Value string
	// Option is an option directive's name.
	Option string
	// Text is the directive as written, lines Line through LastLine,
	// without the last line's line break.
	Text string
}

// Posting is one posting line of a transaction.
type Posting struct {
	// Account is the posting's account; empty if the line has none where
	// one belongs.
	Account string
	// Text is the line trimmed, its comment dropped and runs of whitespace
	// outside strings collapsed to one space.
	Text string
}

// Postings reads the posting lines of a transaction from its Text, in
// order; other blocks have none. A scan does not collect them: most of a
// ledger's bytes are postings, and only some readers need them.
func (b *Block) Postings() []Posting {
	if b.Kind != KindTransaction || b.Text == "" {
		return nil
	}
	// The scanner only reads its source.
	src := unsafe.Slice(unsafe.StringData(b.Text), len(b.Text))
	s := scannerAt(src, b.Text, 0, b.Line, nil)
	s.postings = true
	s.directive(true)
	return s.postList
}

// Scan splits a ledger file into directive blocks, in file order. src is the
// raw file; "\r\n" and lone "\r" end lines as they do for Fava (universal
// newlines). Scan never panics, whatever src holds.
func Scan(src []byte) []Block {
	return scanWhole(src, string(src)).blocks
}

// ScanFile reads the file at path and scans it as Scan does. It saves the
// copy Scan makes of its argument: the strings of the blocks point into the
// file's bytes, which nothing else can reach.
func ScanFile(path string) ([]Block, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return scanWhole(src, owned(src)).blocks, nil
}

// owned returns b as a string without copying it. Only for bytes that are
// never written again and not reachable by anyone else.
func owned(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// scanner holds the state of one scan. Strings it returns are substrings of
// str (one copy of the source) or of buf, which only ever grows, so no
// string is copied in the hot loop.
type scanner struct {
	src []byte
	str string
	p   int // cursor
	ln  int // line number of the cursor

	tags    []string // tags pushed by pushtag, in order
	blocks  []Block
	sa      []string // backing store for the []string fields of blocks
	ma      []Meta   // backing store for Meta
	buf     strings.Builder
	noClose int // no closing quote at or after this offset; -1 unknown
	// strLines counts the line breaks read inside strings.
	strLines int
	base     int // offset of src in the file

	// prevTags are the pushed tags before the pushtag or poptag block at
	// index prevTagsBlock (-1: none yet).
	prevTags      []string
	prevTagsBlock int

	// scratch lists of the block being scanned, reused across blocks
	links, tagl, accts, curs []string

	// postings makes the scan read posting lines into postList.
	postings bool
	postList []Posting
}

// scannerAt returns a scanner of src, the file from offset base on, which
// starts on line with tags pushed. Its arenas are not sized yet.
func scannerAt(src []byte, str string, base, line int, tags []string) *scanner {
	s := &scanner{src: src, str: str, ln: line, noClose: -1, base: base, prevTagsBlock: -1}
	s.tags = append(s.tags, tags...)
	return s
}

// newScanner returns a scanner as scannerAt does, with its arenas sized
// for src.
func newScanner(src []byte, str string, base, line int, tags []string) *scanner {
	s := scannerAt(src, str, base, line, tags)
	lines := bytes.Count(src, []byte{'\n'})
	s.reserve(lines, make([]Block, 0, blocksFor(lines)))
	return s
}

// blocksFor estimates how many blocks a source of so many lines holds.
func blocksFor(lines int) int { return lines/4 + 16 }

// reserve sizes the arenas for scanning a source of so many lines, and
// takes blocks as the list of blocks.
func (s *scanner) reserve(lines int, blocks []Block) {
	s.blocks = blocks
	s.sa = make([]string, 0, lines/4+16)
	s.buf.Grow(lines/2 + 64)
}

// splitMin is the size from which scanWhole scans a file in two parts at
// once.
var splitMin = 1 << 20

// scanWhole scans all of src, as newScanner(src, str, 0, 1, nil).run()
// does. A large file is scanned in two parts on two goroutines: the second
// part from a line that starts with a digit, past the middle, the first up
// to that line. The parts are joined when the first scan ends exactly at
// that line with no tags pushed, which makes the second scan's start the
// state a scan of the whole file would be in there; otherwise (a string or
// a pushtag spanning the split, rare) the first scan simply goes on to the
// end.
func scanWhole(src []byte, str string) *scanner {
	split := -1
	if len(src) >= splitMin && runtime.GOMAXPROCS(0) > 1 {
		split = splitPoint(src)
	}
	s, _ := scanSplit(src, str, split)
	return s
}

// scanSplit scans src as scanWhole does, with the second part from split,
// or in one part if split <= 0, and reports whether it joined two parts.
func scanSplit(src []byte, str string, split int) (s *scanner, joined bool) {
	if split <= 0 || split >= len(src) {
		s := newScanner(src, str, 0, 1, nil)
		s.run()
		return s, false
	}
	// One list of blocks for both parts: the first part's at its start,
	// the second's after room for as many as the first is likely to have.
	la, lb := bytes.Count(src[:split], []byte{'\n'}), bytes.Count(src[split:], []byte{'\n'})
	na := blocksFor(la)
	all := make([]Block, na+blocksFor(lb))
	done := make(chan *scanner)
	go func() {
		t := scannerAt(src[split:], str[split:], split, 1, nil)
		t.reserve(lb, all[na:na])
		t.run()
		done <- t
	}()
	s = scannerAt(src, str, 0, 1, nil)
	s.reserve(la, all[:0:na])
	s.runTo(split)
	t := <-done
	if s.p != split || len(s.tags) > 0 {
		s.run()
		return s, false
	}
	s.join(t, all)
	return s, true
}

// splitPoint returns the offset of the first line past the middle of src
// that starts with a digit (a dated directive, unless a string spans it),
// or -1.
func splitPoint(src []byte) int {
	p := len(src) / 2
	for {
		i := bytes.IndexByte(src[p:], '\n')
		if i < 0 {
			return -1
		}
		p += i + 1
		if p < len(src) && src[p] >= '0' && src[p] <= '9' {
			return p
		}
	}
}

// join appends to s the scan t of the source from offset t.base, which s
// has reached in the state t started in; all is the list both write into.
func (s *scanner) join(t *scanner, all []Block) {
	d := s.ln - 1
	for i := range t.blocks {
		b := &t.blocks[i]
		b.Line += d
		b.EndLine += d
		b.LastLine += d
		for j := range b.Meta {
			b.Meta[j].Line += d
		}
	}
	if t.prevTagsBlock >= 0 {
		s.prevTags, s.prevTagsBlock = t.prevTags, t.prevTagsBlock+len(s.blocks)
	}
	n, at := len(s.blocks), cap(s.blocks)
	if unsafe.SliceData(s.blocks) == unsafe.SliceData(all) && unsafe.SliceData(t.blocks) == unsafe.SliceData(all[at:]) {
		// Both parts are still where they started in all: close the gap,
		// and clear what is left behind of the second part.
		s.blocks = all[:n+len(t.blocks)]
		copy(s.blocks[n:], t.blocks)
		clear(all[len(s.blocks) : at+len(t.blocks)])
	} else {
		s.blocks = append(s.blocks, t.blocks...)
	}
	s.tags = t.tags
	if s.noClose < 0 && t.noClose >= 0 {
		s.noClose = t.noClose + t.base
	}
	s.p, s.ln = len(s.src), t.ln+d
}

// token kinds
const (
	tEOL uint8 = iota // end of line or file; a comment counts as its end
	tWord
	tString
	tTag
	tLink
)

type token struct {
	start, end int // bytes in src; strings include their quotes, tags and links their sigil
	kind       uint8
	esc        bool
}

// wordEnd marks the bytes that end a word token.
var wordEnd = [256]bool{' ': true, '\t': true, '\n': true, '\r': true, ';': true, '"': true, '\f': true, '\v': true}

// lineStartPlain marks the bytes that, first after a line's indentation,
// make it non-blank for Beancount and for Python alike.
var lineStartPlain = func() (t [256]bool) {
	for c := 0x21; c < 0x7f; c++ {
		t[c] = true
	}
	return t
}()

// isBlankByte reports the bytes Beancount skips between tokens.
func isBlankByte(c byte) bool { return c == ' ' || c == '\t' || c == '\f' || c == '\v' }

// next reads the next token on the current line. It does not consume the
// line break; a comment reads as the end of the line.
func (s *scanner) next() token {
	src := s.src
	p := s.p
	// Runs of spaces (the padding before amounts) eight at a time.
	for p+8 <= len(src) {
		if x := binary.LittleEndian.Uint64(src[p:]) ^ 0x2020202020202020; x != 0 {
			p += bits.TrailingZeros64(x) >> 3
			break
		}
		p += 8
	}
	for p < len(src) && isBlankByte(src[p]) {
		p++
	}
	s.p = p
	if p >= len(src) {
		return token{kind: tEOL, start: p, end: p}
	}
	switch c := src[p]; c {
	case '\n', '\r':
		return token{kind: tEOL, start: p, end: p}
	case ';':
		s.p = s.lineEnd(p)
		return token{kind: tEOL, start: s.p, end: s.p}
	case '"':
		return s.stringToken()
	case '#', '^':
		q := p + 1
		for q < len(src) && favaproxy.IsLinkChar(src[q]) {
			q++
		}
		if q > p+1 {
			s.p = q
			k := tTag
			if c == '^' {
				k = tLink
			}
			return token{kind: k, start: p, end: q}
		}
	}
	q := p + 1
	for q < len(src) && !wordEnd[src[q]] {
		q++
	}
	s.p = q
	return token{kind: tWord, start: p, end: q}
}

// Constants of the bytewise (SWAR) searches: a byte of ones, a byte of
// high bits.
const (
	swarLo = 0x0101010101010101
	swarHi = 0x8080808080808080
)

// swarBelow returns a mask whose lowest set high bit marks the first byte
// of x (little-endian) below n (n <= 0x80); higher bits may be false.
func swarBelow(x, n uint64) uint64 { return (x - swarLo*n) & ^x & swarHi }

// swarEq returns a mask whose lowest set high bit marks the first byte of x
// equal to c; higher bits may be false.
func swarEq(x, c uint64) uint64 { return swarBelow(x^(swarLo*c), 1) }

// stringEnd returns the offset of the closing quote of a string whose
// contents start at q, and ok=false if a backslash or a line break comes
// first (or no quote does), which the slow path then reads.
func stringEnd(src []byte, q int) (int, bool) {
	for q+8 <= len(src) {
		x := binary.LittleEndian.Uint64(src[q:])
		m := swarEq(x, '"') | swarEq(x, '\\') | swarBelow(x, '\r'+1)
		if m == 0 {
			q += 8
			continue
		}
		q += bits.TrailingZeros64(m) >> 3
		switch src[q] {
		case '"':
			return q, true
		case '\\', '\n', '\r':
			return q, false
		}
		q++
	}
	for ; q < len(src); q++ {
		switch src[q] {
		case '"':
			return q, true
		case '\\', '\n', '\r':
			return q, false
		}
	}
	return q, false
}

// stringToken reads a string starting at the quote under the cursor. A
// string runs to the next unescaped quote, across lines; without one, the
// quote starts an invalid token that ends with the line, as in Beancount.
func (s *scanner) stringToken() token {
	src := s.src
	start := s.p
	t := token{kind: tString, start: start}
	if s.noClose >= 0 && start >= s.noClose {
		s.p = s.lineEnd(start)
		t.kind, t.end = tWord, s.p
		return t
	}
	q := start + 1
	// Fast path: a string on one line without escapes.
	if e, ok := stringEnd(src, q); ok {
		s.p = e + 1
		t.end = s.p
		return t
	}
	lines := 0
	for q < len(src) {
		c := src[q]
		switch c {
		case '"':
			s.p = q + 1
			s.ln += lines
			s.strLines += lines
			t.end = s.p
			return t
		case '\\':
			t.esc = true
			q++
			if q < len(src) {
				switch src[q] {
				case '\n':
					lines++
				case '\r':
					if q+1 >= len(src) || src[q+1] != '\n' {
						lines++
					}
				}
			}
		case '\n':
			t.esc = true
			lines++
		case '\r':
			t.esc = true
			if q+1 >= len(src) || src[q+1] != '\n' {
				lines++
			}
		}
		q++
	}
	s.noClose = start
	s.p = s.lineEnd(start)
	t.kind, t.end = tWord, s.p
	return t
}

// cursor is a position of the scanner to come back to.
type cursor struct{ p, ln, strLines int }

func (s *scanner) mark() cursor   { return cursor{s.p, s.ln, s.strLines} }
func (s *scanner) reset(c cursor) { s.p, s.ln, s.strLines = c.p, c.ln, c.strLines }

// lineEnd returns the offset of the line break (or the end) of the line
// holding p.
func (s *scanner) lineEnd(p int) int {
	// A loop rather than IndexByte('\n'): in a file whose lines end in a
	// lone CR, searching for LF would run to the end on every line.
	src := s.src
	for p < len(src) && src[p] != '\n' && src[p] != '\r' {
		p++
	}
	return p
}

// skipLine moves the cursor past the rest of the current line and its break.
func (s *scanner) skipLine() {
	s.p = s.lineEnd(s.p)
	s.eatEOL()
}

// eatEOL consumes the line break under the cursor, if any.
func (s *scanner) eatEOL() {
	src := s.src
	if s.p >= len(src) {
		return
	}
	switch src[s.p] {
	case '\n':
		s.p++
	case '\r':
		s.p++
		if s.p < len(src) && src[s.p] == '\n' {
			s.p++
		}
	default:
		return
	}
	s.ln++
}

// skipRest moves the cursor to the end of the line as restOfLine does,
// but reads no token unless the rest of the line holds a quote, which may
// open a string that spans lines (or a CR, a line break of its own).
func (s *scanner) skipRest() {
	w := s.src[s.p:min(len(s.src), s.p+512)]
	i := bytes.IndexByte(w, '\n')
	if i < 0 {
		s.restOfLine()
		return
	}
	w = w[:i]
	if i > 0 && w[i-1] == '\r' {
		w = w[:i-1]
	}
	if bytes.IndexByte(w, '"') >= 0 || bytes.IndexByte(w, '\r') >= 0 {
		s.restOfLine()
		return
	}
	s.p += len(w)
}

// restOfLine skips to the end of the current line without consuming the
// break, keeping track of strings that span lines.
func (s *scanner) restOfLine() {
	for {
		if t := s.next(); t.kind == tEOL {
			return
		}
	}
}

// blankLine reports whether the line starting at p holds only whitespace
// as Beancount sees it.
func (s *scanner) blankLine(p int) bool {
	src := s.src
	for ; p < len(src); p++ {
		switch c := src[p]; {
		case c == '\n' || c == '\r':
			return true
		case !isBlankByte(c):
			return false
		}
	}
	return true
}

// run scans from the cursor to the end.
func (s *scanner) run() { s.runTo(len(s.src)) }

// runTo scans from the cursor until it reaches stop or passes it: the
// directive that starts before stop is read to its end.
func (s *scanner) runTo(stop int) {
	src := s.src
	for s.p < stop {
		c := src[s.p]
		switch {
		case c >= '0' && c <= '9':
			s.directive(true)
		case c == '\n' || c == '\r' || c == ';' || ignoredLineStart(c) || s.spaceAt(s.p):
			// Blank lines, comments, org-mode headings and other lines
			// Beancount ignores, and indented lines outside a directive
			// (also those indented with a character only Python counts as
			// whitespace, which Fava's slice of the entry above takes).
			s.skipLine()
		default:
			// Undated directives, and lines Beancount rejects.
			s.directive(false)
		}
	}
}

// spaceAt reports whether the character at p is whitespace for Python.
func (s *scanner) spaceAt(p int) bool {
	c := s.src[p]
	if c < utf8.RuneSelf {
		return isSpace(rune(c))
	}
	r, _ := utf8.DecodeRune(s.src[p:])
	return isSpace(r)
}

// ignoredLineStart reports the characters that make Beancount skip a whole
// line when they start it (org-mode headings, flag-like characters).
func ignoredLineStart(c byte) bool {
	switch c {
	case '*', '#', '!', '&', '?', '%', ':', 'P', 'S', 'T', 'C', 'U', 'R', 'M':
		return true
	}
	return false
}

func (s *scanner) text(t token) string { return s.str[t.start:t.end] }

// stringValue returns the contents of a string token, unescaped.
func (s *scanner) stringValue(t token) string {
	if t.kind != tString {
		return s.text(t)
	}
	if !t.esc {
		return s.str[t.start+1 : t.end-1]
	}
	b := &s.buf
	start := b.Len()
	raw := s.src[t.start+1 : t.end-1]
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch c {
		case '\\':
			if i+1 >= len(raw) {
				b.WriteByte(c)
				continue
			}
			i++
			switch e := raw[i]; e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case 'f':
				b.WriteByte('\f')
			case 'b':
				b.WriteByte('\b')
			case '\r':
				b.WriteByte('\n')
				if i+1 < len(raw) && raw[i+1] == '\n' {
					i++
				}
			default:
				b.WriteByte(e)
			}
		case '\r':
			b.WriteByte('\n')
			if i+1 < len(raw) && raw[i+1] == '\n' {
				i++
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()[start:]
}

// isFlag reports the one-character transaction flags.
func isFlag(w string) bool {
	if len(w) != 1 {
		return false
	}
	switch w[0] {
	case '*', '!', '&', '#', '?', '%', 'P', 'S', 'T', 'C', 'U', 'R', 'M':
		return true
	}
	return false
}

// isDate reports whether w looks like a Beancount date: YYYY-MM-DD or with
// '/' separators.
func isDate(w string) bool {
	if len(w) != 10 {
		return false
	}
	for i := 0; i < 10; i++ {
		c := w[i]
		switch i {
		case 4, 7:
			if c != '-' && c != '/' {
				return false
			}
		default:
			if c < '0' || c > '9' {
				return false
			}
		}
	}
	return true
}

// metaKey returns the key of a metadata word "key:" and the rest of the
// word after the colon, and ok=false when w is not a metadata key.
func metaKey(w string) (key, rest string, ok bool) {
	if len(w) < 3 || w[0] < 'a' || w[0] > 'z' {
		return "", "", false
	}
	for i := 1; i < len(w); i++ {
		c := w[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_':
		case c == ':':
			if i < 2 {
				return "", "", false
			}
			return w[:i], w[i+1:], true
		default:
			return "", "", false
		}
	}
	return "", "", false
}

// directive scans one directive starting at the cursor, which is at the
// start of a line.
func (s *scanner) directive(dated bool) {
	// The block is built here and appended when done: while the garbage
	// collector runs, writes into the list cost a write barrier each.
	blk := Block{Kind: KindUnknown, Line: s.ln, Offset: s.p}
	b := &blk
	strLines := s.strLines
	links, tags, accts, curs := s.links[:0], s.tagl[:0], s.accts[:0], s.curs[:0]
	start := s.p
	metaStart := len(s.ma)

	t := s.next()
	if dated {
		w := s.text(t)
		if t.kind == tWord && isDate(w) {
			if w[4] == '/' || w[7] == '/' {
				w = strings.ReplaceAll(w, "/", "-")
			}
			b.Date = w
			t = s.next()
			s.datedHeader(b, t, &links, &tags, &accts, &curs)
		} else {
			s.restOfLine()
		}
	} else if t.kind == tWord {
		s.undatedHeader(b, s.text(t), &tags)
	} else {
		s.restOfLine()
	}
	s.eatEOL()

	// Continuation lines: indented, non-blank lines, and any line a string
	// spilled into.
	posting := false
	// Fava's slice is followed along: it takes the lines Beancount takes
	// here, unless a string spans lines (then it is worked out anew below).
	endLine, fava := b.Line, true
	for s.p < len(s.src) {
		src := s.src
		c := src[s.p]
		if c != ' ' && c != '\t' {
			break
		}
		q := s.p + 1
		for q < len(src) && (src[q] == ' ' || src[q] == '\t') {
			q++
		}
		if q < len(src) && !lineStartPlain[src[q]] {
			// Rare: a line of blanks, or one where the first non-blank
			// character needs a closer look.
			if s.blankLine(q) {
				break
			}
			if fava && !pyIndented(src[s.p:]) {
				fava = false
			}
		} else if q >= len(src) {
			break
		}
		if fava {
			endLine = s.ln
		}
		s.p = q
		if b.Kind == KindTransaction && !s.postings && q < len(src) && 'A' <= src[q] && src[q] <= 'Z' {
			// A posting (an account starts with a capital): only a
			// string on it could matter here.
			posting = true
			s.skipRest()
			s.eatEOL()
			continue
		}
		t := s.next()
		switch t.kind {
		case tEOL:
		case tTag, tLink:
			for ; t.kind != tEOL; t = s.next() {
				if posting {
					continue
				}
				switch t.kind {
				case tTag:
					tags = appendSet(tags, s.str[t.start+1:t.end])
				case tLink:
					links = appendSet(links, s.str[t.start+1:t.end])
				}
			}
		case tWord:
			w := s.text(t)
			if key, rest, ok := metaKey(w); ok {
				line := s.ln
				val := s.metaValue(rest)
				if !posting {
					s.ma = append(s.ma, Meta{Key: key, Value: val, Line: line})
				}
				break
			}
			if b.Kind != KindTransaction {
				s.restOfLine()
				break
			}
			posting = true
			if !s.postings {
				s.restOfLine()
				break
			}
			acct := w
			if isFlag(w) {
				m := s.mark()
				t2 := s.next()
				acct = s.text(t2)
				if t2.kind != tWord {
					acct = ""
				}
				s.reset(m)
			}
			s.postList = append(s.postList, Posting{Account: acct, Text: s.normalized(t.start)})
		default:
			s.restOfLine()
		}
		s.eatEOL()
	}
	b.LastLine = s.ln - 1
	if s.p >= len(s.src) && !endsWithBreak(s.src) {
		b.LastLine = s.ln
	}
	if b.LastLine < b.Line {
		b.LastLine = b.Line
	}
	switch {
	case s.strLines != strLines:
		b.EndLine = s.favaEnd(b.Offset, b.Line)
	case fava:
		b.EndLine = s.favaFrom(s.p, endLine)
	default:
		b.EndLine = endLine
	}
	end := s.p
	if end > start && s.src[end-1] == '\n' {
		end--
	}
	if end > start && s.src[end-1] == '\r' {
		end--
	}
	b.Text = s.str[start:end]
	b.Offset += s.base

	if b.Kind == KindTransaction || b.Kind == KindDocument {
		for _, tg := range s.tags {
			tags = appendSet(tags, tg)
		}
	}
	b.Links = s.keep(links)
	b.Tags = s.keep(tags)
	b.Accounts = s.keep(accts)
	b.Currencies = s.keep(curs)
	s.links, s.tagl, s.accts, s.curs = links, tags, accts, curs
	if len(s.ma) > metaStart {
		b.Meta = s.ma[metaStart:len(s.ma):len(s.ma)]
	}
	s.blocks = append(s.blocks, blk)
}

// keep copies a short list into the arena and returns a slice of it that
// cannot be appended into.
func (s *scanner) keep(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	i := len(s.sa)
	s.sa = append(s.sa, l...)
	return s.sa[i:len(s.sa):len(s.sa)]
}

func endsWithBreak(src []byte) bool {
	if len(src) == 0 {
		return true
	}
	c := src[len(src)-1]
	return c == '\n' || c == '\r'
}

func appendSet(l []string, v string) []string {
	for _, x := range l {
		if x == v {
			return l
		}
	}
	return append(l, v)
}

// metaValue reads a metadata value: the rest of the line. rest is what
// followed the colon in the key's word.
func (s *scanner) metaValue(rest string) string {
	t := s.next()
	if rest == "" {
		if t.kind == tEOL {
			return ""
		}
		m := s.mark()
		if t2 := s.next(); t2.kind == tEOL {
			return s.stringValue(t)
		}
		s.reset(m)
		return s.normalized(t.start)
	}
	// "key:value" written without a space.
	if t.kind == tEOL {
		return rest
	}
	b := &s.buf
	start := b.Len()
	b.WriteString(rest)
	for ; t.kind != tEOL; t = s.next() {
		b.WriteByte(' ')
		b.WriteString(s.text(t))
	}
	return b.String()[start:]
}

// normalized returns the tokens from the one starting at start (read up
// to the cursor) to the end of the line, joined by single spaces. Runs of
// tokens already one space apart are taken as they are, so a line without
// runs of whitespace costs no copy.
func (s *scanner) normalized(start int) string {
	segStart, segEnd := start, s.p
	b := &s.buf
	bstart := -1
	for {
		t := s.next()
		if t.kind == tEOL {
			break
		}
		if t.start == segEnd+1 && s.src[segEnd] == ' ' {
			segEnd = t.end
			continue
		}
		if bstart < 0 {
			bstart = b.Len()
		}
		b.WriteString(s.str[segStart:segEnd])
		b.WriteByte(' ')
		segStart, segEnd = t.start, t.end
	}
	if bstart < 0 {
		return s.str[segStart:segEnd]
	}
	b.WriteString(s.str[segStart:segEnd])
	return b.String()[bstart:]
}

// datedHeader reads the rest of a dated directive's first line; t is the
// token after the date.
func (s *scanner) datedHeader(b *Block, t token, links, tags, accts, curs *[]string) {
	w := s.text(t)
	strs := 0
	var s1, s2 string
	switch {
	case t.kind == tWord && (w == "txn" || isFlag(w)):
		b.Kind = KindTransaction
		b.Flag = w
		if w == "txn" {
			b.Flag = "*"
		}
	case t.kind == tString:
		// A transaction without a flag is a syntax error in Beancount.
		b.Kind = KindUnknown
	case t.kind == tWord:
		switch w {
		case "open", "close", "balance", "note", "document", "price", "pad",
			"event", "query", "custom", "commodity":
			b.Kind = Kind(w)
		}
	}
	if b.Kind == KindUnknown {
		s.restOfLine()
		return
	}
	words := 0
	for {
		t := s.next()
		switch t.kind {
		case tEOL:
			goto done
		case tString:
			strs++
			switch strs {
			case 1:
				s1 = s.stringValue(t)
			case 2:
				s2 = s.stringValue(t)
			}
		case tTag:
			*tags = appendSet(*tags, s.str[t.start+1:t.end])
		case tLink:
			*links = appendSet(*links, s.str[t.start+1:t.end])
		case tWord:
			words++
			w := s.text(t)
			switch b.Kind {
			case KindOpen:
				if words == 1 {
					*accts = append(*accts, w)
					break
				}
				for _, c := range strings.Split(w, ",") {
					if c != "" {
						*curs = append(*curs, c)
					}
				}
			case KindClose, KindBalance, KindNote, KindDocument:
				if words == 1 {
					*accts = append(*accts, w)
				}
			case KindPad:
				if words <= 2 {
					*accts = append(*accts, w)
				}
			case KindCommodity, KindPrice:
				if words == 1 {
					*curs = append(*curs, w)
				}
			}
		}
	}
done:
	switch b.Kind {
	case KindTransaction:
		if strs >= 2 {
			b.Payee, b.Narration = s1, s2
		} else {
			b.Narration = s1
		}
	case KindNote, KindEvent:
		if b.Kind == KindEvent {
			b.Value, b.Narration = s1, s2
		} else {
			b.Narration = s1
		}
	case KindDocument, KindQuery:
		b.Value = s1
	case KindCustom:
		b.Value, b.Narration = s1, s2
	}
}

// undatedHeader reads the rest of an undated directive's first line; w is
// its keyword.
func (s *scanner) undatedHeader(b *Block, w string, tags *[]string) {
	switch w {
	case "option", "include", "plugin":
		b.Kind = Kind(w)
		var args []string
		for t := s.next(); t.kind != tEOL; t = s.next() {
			if t.kind == tString {
				args = append(args, s.stringValue(t))
			}
		}
		if w == "option" {
			if len(args) > 0 {
				b.Option = args[0]
			}
			if len(args) > 1 {
				b.Value = args[1]
			}
		} else if len(args) > 0 {
			b.Value = args[0]
		}
	case "pushtag", "poptag":
		b.Kind = Kind(w)
		for t := s.next(); t.kind != tEOL; t = s.next() {
			if t.kind == tTag && b.Value == "" {
				b.Value = s.str[t.start+1 : t.end]
			}
		}
		if b.Value == "" {
			break
		}
		*tags = append(*tags, b.Value)
		s.prevTags = append([]string(nil), s.tags...)
		s.prevTagsBlock = len(s.blocks) // the index this block gets
		if w == "pushtag" {
			s.tags = append(s.tags, b.Value)
			break
		}
		for i := len(s.tags) - 1; i >= 0; i-- {
			if s.tags[i] == b.Value {
				s.tags = append(s.tags[:i:i], s.tags[i+1:]...)
				break
			}
		}
	case "pushmeta", "popmeta":
		b.Kind = Kind(w)
		t := s.next()
		if t.kind == tWord {
			if key, rest, ok := metaKey(s.text(t)); ok {
				line := s.ln
				val := ""
				if w == "pushmeta" {
					val = s.metaValue(rest)
				}
				s.ma = append(s.ma, Meta{Key: key, Value: val, Line: line})
			}
		}
		s.restOfLine()
	default:
		s.restOfLine()
	}
}

// favaFrom continues Fava's slice whose last line so far is line with the
// line starting at p.
func (s *scanner) favaFrom(p, line int) int {
	src := s.src
	for p < len(src) && pyIndented(src[p:]) {
		line++
		e := s.lineEnd(p)
		if e >= len(src) {
			break
		}
		p = e + 1
		if src[e] == '\r' && p < len(src) && src[p] == '\n' {
			p++
		}
	}
	return line
}

// favaEnd returns the last line of the slice Fava cuts for an entry whose
// first line starts at offset off and has number line: following lines are
// taken while they are non-blank and start with whitespace.
func (s *scanner) favaEnd(off, line int) int {
	src := s.src
	p := off
	for {
		// Move p past the current line.
		e := s.lineEnd(p)
		if e >= len(src) {
			return line
		}
		p = e + 1
		if src[e] == '\r' && p < len(src) && src[p] == '\n' {
			p++
		}
		if p >= len(src) || !pyIndented(src[p:]) {
			return line
		}
		line++
	}
}

// pyIndented reports whether the line at the start of b starts with a
// Python whitespace character and is not all whitespace (Python's strip).
func pyIndented(b []byte) bool {
	first := true
	for i := 0; i < len(b); {
		c := b[i]
		if c == '\n' || c == '\r' {
			return false
		}
		var r rune
		size := 1
		if c < utf8.RuneSelf {
			r = rune(c)
		} else {
			r, size = utf8.DecodeRune(b[i:])
		}
		if !isSpace(r) {
			return !first
		}
		first = false
		i += size
	}
	return false
}
