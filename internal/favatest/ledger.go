package favatest

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/checksum"
)

// entry is one dated directive as the emulator's loader saw it.
type entry struct {
	file    string // absolute path
	lineno  int    // 1-based line of the directive
	kind    string // Fava's class name: Transaction, Open, Balance, …
	date    string
	account string            // Open, Close, Balance, Note, Document
	slice   string            // the entry slice, as Fava cuts it
	hash    string            // depends on file, line and text, like Beancount's hash_entry
	meta    map[string]string // metadata keys (values as written)
	// Transaction header fields.
	flag, payee, narration string
	tags, links            []string
	postings               []posting
	docPath                string // Document: the file it names, absolute
}

type posting struct {
	Account string `json:"account"`
	Amount  string `json:"amount"`
}

// loadError is one problem the loader found, shaped like Fava's errors.
type loadError struct {
	file    string
	lineno  int
	message string
}

// snapshot is a ledger as loaded at one moment: what Fava keeps in memory
// between reloads.
type snapshot struct {
	title    string   // option "title", or Beancount's default
	files    []string // options["include"]: every loaded file, absolute
	entries  []*entry
	byHash   map[string]*entry
	txns     int
	accounts map[string]bool
	// documents are the option "documents" values as written; docDirs the
	// same resolved against the main file's directory.
	documents []string
	docDirs   []string
	docFiles  map[string]bool
	errors    []loadError
	// insertOpts are the fava-option "insert-entry" directives, in load
	// order; defaultFile is the last fava-option "default-file" (its
	// file, and its value as written), nil when there is none.
	insertOpts  []insertOpt
	defaultFile *defaultFileOpt
	// broken is set when a file could not be decoded: Fava's loader raises,
	// the request that reloaded ends in an HTML 500 and the old state stays.
	broken error
}

var (
	dateRe  = regexp.MustCompile(`^(\d{4}[-/]\d{2}[-/]\d{2})\s+(\S+)`)
	metaRe  = regexp.MustCompile(`^\s+([a-z][A-Za-z0-9_-]*):\s*(.*?)\s*$`)
	flagSet = "*!&#?%PSTCURM"
)

// insertOpt is a fava-option "insert-entry" directive: entries dated after
// it with an account the pattern matches (at its start, as Python's
// re.match) are inserted before it, in its file.
type insertOpt struct {
	date   string
	re     *regexp.Regexp
	file   string
	lineno int // 1-based line of the directive
}

// defaultFileOpt is a fava-option "default-file" directive.
type defaultFileOpt struct{ file, value string }

// favaOption reads a custom "fava-option" directive of file at lineno into
// s; other custom directives are ignored.
func (s *snapshot) favaOption(file string, lineno int, date, head string) {
	var strs []string
	for _, t := range tokenize(head) {
		if t.kind == tokString {
			strs = append(strs, t.text)
		}
	}
	if len(strs) < 2 || strs[0] != "fava-option" {
		return
	}
	value := ""
	if len(strs) > 2 {
		value = strs[2]
	}
	// Fava reads the name with "-" as "_": insert-entry or insert_entry.
	switch strings.ReplaceAll(strs[1], "_", "-") {
	case "insert-entry":
		re, err := regexp.Compile(`^(?:` + value + `)`)
		if err != nil {
			s.errors = append(s.errors, loadError{file, lineno, fmt.Sprintf("Should be a regular expression: '%s'.", value)})
			return
		}
		s.insertOpts = append(s.insertOpts, insertOpt{date: date, re: re, file: file, lineno: lineno})
	case "default-file":
		s.defaultFile = &defaultFileOpt{file: file, value: value}
	}
}

// load reads the ledger whose main file is main, following includes, and
// parses just enough of it to serve Fava's API. read is called for every
// file so the caller can trace it.
func load(main string, read func(string) ([]byte, error)) *snapshot {
	s := &snapshot{title: beancount.DefaultTitle, byHash: map[string]*entry{}, accounts: map[string]bool{}, docFiles: map[string]bool{}}
	seen := map[string]bool{}
	var loadFile func(path string)
	loadFile = func(path string) {
		if seen[path] {
			return
		}
		seen[path] = true
		s.files = append(s.files, path)
		raw, err := read(path)
		if err != nil {
			s.errors = append(s.errors, loadError{file: path, message: fmt.Sprintf("File %q does not exist", path)})
			return
		}
		if !utf8.Valid(raw) {
			s.broken = fmt.Errorf("'utf-8' codec can't decode file %s", path)
			return
		}
		text := string(checksum.Normalize(raw))
		lines := checksum.Lines(text)
		for i := 0; i < len(lines); i++ {
			line := strings.TrimRight(lines[i], "\n")
			switch {
			case strings.TrimSpace(line) == "":
			case strings.HasPrefix(line, "option "):
				toks := tokenize(line)
				if len(toks) >= 3 && toks[1].kind == tokString && toks[2].kind == tokString {
					switch toks[1].text {
					case "title":
						if path == s.files[0] {
							s.title = toks[2].text
						}
					case "documents":
						s.documents = append(s.documents, toks[2].text)
					}
				}
			case strings.HasPrefix(line, "include "):
				toks := tokenize(line)
				if len(toks) < 2 || toks[1].kind != tokString {
					s.errors = append(s.errors, loadError{path, i + 1, "Invalid include"})
					continue
				}
				pattern := toks[1].text
				if !filepath.IsAbs(pattern) {
					pattern = filepath.Join(filepath.Dir(path), pattern)
				}
				matches, _ := filepath.Glob(pattern)
				if len(matches) == 0 {
					s.errors = append(s.errors, loadError{path, i + 1, fmt.Sprintf("File glob %q does not match any files", toks[1].text)})
				}
				sort.Strings(matches)
				for _, m := range matches {
					loadFile(filepath.Clean(m))
				}
			case line[0] == ' ' || line[0] == '\t':
				// Continuation of an entry, handled with its entry.
			case dateRe.MatchString(line):
				n := checksum.EntryLines(lines, i)
				e := parseEntry(path, i+1, lines[i:i+n])
				s.entries = append(s.entries, e)
				if e.kind == "Transaction" {
					s.txns++
				}
				if e.kind == "Open" {
					s.accounts[e.account] = true
				}
				if e.kind == "Document" && e.docPath != "" {
					s.docFiles[e.docPath] = true
				}
				if e.kind == "Custom" {
					s.favaOption(path, i+1, e.date, strings.TrimRight(lines[i], "\n"))
				}
				i += n - 1
			case isIgnorable(line):
			default:
				s.errors = append(s.errors, loadError{path, i + 1, "Syntax error, unexpected line"})
			}
		}
	}
	loadFile(main)
	for _, e := range s.entries {
		s.byHash[e.hash] = e
	}
	for _, d := range s.documents {
		dir := d
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(filepath.Dir(main), d)
		}
		s.docDirs = append(s.docDirs, dir)
		findDocuments(dir, s)
	}
	return s
}

// findDocuments adds the files below dir that Beancount's documents option
// turns into Document entries: <dir>/<Account parts>/<YYYY-MM-DD>….
func findDocuments(dir string, s *snapshot) {
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if s.inDocumentFolder(dir, p) {
			s.docFiles[p] = true
		}
		return nil
	})
}

var docNameRe = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}`)

// inDocumentFolder reports whether file lies in the folder of an open
// account below the documents folder dir (<dir>/<Account parts>/) and its
// name starts with a date.
func (s *snapshot) inDocumentFolder(dir, file string) bool {
	rel, err := filepath.Rel(dir, filepath.Dir(file))
	if err != nil || strings.HasPrefix(rel, "..") {
		return false
	}
	account := strings.ReplaceAll(rel, string(filepath.Separator), ":")
	return s.accounts[account] && docNameRe.MatchString(filepath.Base(file))
}

func isIgnorable(line string) bool {
	for _, p := range []string{";", "#", "*", "plugin ", "pushtag ", "poptag ", "pushmeta ", "popmeta "} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return false
}

// parseEntry reads a directive's slice lines.
func parseEntry(file string, lineno int, lines []string) *entry {
	e := &entry{file: file, lineno: lineno, slice: checksum.JoinSlice(lines), meta: map[string]string{}}
	sum := md5.Sum([]byte(file + "\x00" + strconv.Itoa(lineno) + "\x00" + e.slice))
	e.hash = hex.EncodeToString(sum[:])
	head := strings.TrimRight(lines[0], "\n")
	m := dateRe.FindStringSubmatch(head)
	e.date = strings.ReplaceAll(m[1], "/", "-")
	toks := tokenize(head)
	kw := m[2]
	switch {
	case kw == "txn" || (len(kw) == 1 && strings.Contains(flagSet, kw)):
		e.kind = "Transaction"
		e.flag = kw
		if kw == "txn" {
			e.flag = "*"
		}
		var strs []string
		for _, t := range toks[2:] {
			switch t.kind {
			case tokString:
				strs = append(strs, t.text)
			case tokTag:
				e.tags = append(e.tags, t.text)
			case tokLink:
				e.links = append(e.links, t.text)
			}
		}
		switch len(strs) {
		case 1:
			e.narration = strs[0]
		case 2:
			e.payee, e.narration = strs[0], strs[1]
		}
	default:
		e.kind = directiveKinds[kw]
		if e.kind == "" {
			e.kind = "Custom"
		}
		if len(toks) >= 3 && toks[2].kind == tokWord {
			e.account = toks[2].text
		}
		if e.kind == "Document" && len(toks) >= 4 && toks[3].kind == tokString {
			p := toks[3].text
			if !filepath.IsAbs(p) {
				p = filepath.Join(filepath.Dir(file), p)
			}
			e.docPath = filepath.Clean(p)
		}
	}
	inPostings := false
	for _, l := range lines[1:] {
		l = strings.TrimRight(l, "\n")
		if mm := metaRe.FindStringSubmatch(l); mm != nil && !strings.Contains(mm[1], ":") {
			if !inPostings {
				e.meta[mm[1]] = mm[2]
			}
			continue
		}
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, ";") {
			continue
		}
		inPostings = true
		if e.kind == "Transaction" {
			fields := strings.Fields(t)
			k := 0
			if len(fields[0]) == 1 && strings.Contains(flagSet, fields[0]) && len(fields) > 1 {
				k = 1
			}
			acc := fields[k]
			rest := strings.TrimSpace(t[strings.Index(t, acc)+len(acc):])
			if i := strings.Index(rest, ";"); i >= 0 {
				rest = strings.TrimSpace(rest[:i])
			}
			e.postings = append(e.postings, posting{Account: acc, Amount: rest})
		}
	}
	return e
}

var directiveKinds = map[string]string{
	"open": "Open", "close": "Close", "balance": "Balance", "note": "Note",
	"document": "Document", "price": "Price", "event": "Event", "query": "Query",
	"custom": "Custom", "commodity": "Commodity", "pad": "Pad",
}

type tokKind int

const (
	tokWord tokKind = iota
	tokString
	tokTag
	tokLink
)

type token struct {
	kind tokKind
	text string
}

// tokenize splits one line into Beancount tokens: strings (unescaped),
// #tags, ^links and other words. A ';' outside a string ends the line.
func tokenize(line string) []token {
	var toks []token
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			i++
		case c == ';':
			return toks
		case c == '"':
			var b strings.Builder
			j := i + 1
			for ; j < len(line) && line[j] != '"'; j++ {
				if line[j] == '\\' && j+1 < len(line) {
					j++
				}
				b.WriteByte(line[j])
			}
			toks = append(toks, token{tokString, b.String()})
			i = j + 1
		default:
			j := i
			for j < len(line) && line[j] != ' ' && line[j] != '\t' && line[j] != '\n' && line[j] != '"' {
				j++
			}
			w := line[i:j]
			switch {
			case len(w) > 1 && w[0] == '#':
				toks = append(toks, token{tokTag, w[1:]})
			case len(w) > 1 && w[0] == '^':
				toks = append(toks, token{tokLink, w[1:]})
			default:
				toks = append(toks, token{tokWord, w})
			}
			i = j
		}
	}
	return toks
}

// serialise renders an entry as Fava's serialise does, in part: the fields
// clients use to find an entry again.
func (e *entry) serialise() map[string]any {
	meta := map[string]any{"filename": e.file, "lineno": e.lineno}
	for k, v := range e.meta {
		meta[k] = v
	}
	out := map[string]any{"t": e.kind, "date": e.date, "entry_hash": e.hash, "meta": meta}
	switch e.kind {
	case "Transaction":
		out["flag"] = e.flag
		out["payee"] = e.payee
		out["narration"] = e.narration
		out["tags"] = nonNil(e.tags)
		out["links"] = nonNil(e.links)
		ps := e.postings
		if ps == nil {
			ps = []posting{}
		}
		out["postings"] = ps
	case "Open", "Close", "Balance", "Note", "Document":
		out["account"] = e.account
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
