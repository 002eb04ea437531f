package beancount

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File is one scanned ledger file.
type File struct {
	// Path is absolute and cleaned.
	Path    string
	Size    int64
	ModTime time.Time
	// Sum is Fava's checksum of the file (checksum.File of its bytes).
	Sum    string
	Blocks []Block
}

// Ledger is what makes up a ledger: its files and the options Fava shows.
type Ledger struct {
	// Main is the main file, absolute and cleaned.
	Main string
	// Files are the main file first, then the included files in the order
	// Beancount loads them (breadth first, each glob's matches sorted), each
	// once, absolute and cleaned.
	Files []string
	// Title is the "title" option of the main file, or DefaultTitle.
	Title string
	// Slug is the URL segment Fava serves the ledger under.
	Slug string
	// Options are the main file's options, each name with its values in
	// order. As in Beancount, options in included files are ignored.
	Options map[string][]string
	// Problems are what Beancount would report about the file set and still
	// load the rest: includes that match no file, files included twice,
	// included files that cannot be read.
	Problems []string
}

// Load reads the ledger whose main file is main: it follows include
// directives and reads the options of the main file. Only an unreadable main
// file is an error; other problems are recorded in Ledger.Problems.
func Load(main string) (*Ledger, error) {
	return discover(main, func(path string) (*fileFacts, error) {
		src, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return factsOf(Scan(src)), nil
	})
}

// fileFacts is what discovery needs to know of a file.
type fileFacts struct {
	includes []string    // include arguments, in order
	options  [][2]string // option name and value, in order
}

func factsOf(blocks []Block) *fileFacts {
	f := &fileFacts{}
	for i := range blocks {
		f.add(&blocks[i])
	}
	return f
}

func (f *fileFacts) add(b *Block) {
	switch b.Kind {
	case KindInclude:
		f.includes = append(f.includes, b.Value)
	case KindOption:
		f.options = append(f.options, [2]string{b.Option, b.Value})
	}
}

// discover walks the include graph from main, reading each file's facts with
// read, breadth first as Beancount does.
func discover(main string, read func(path string) (*fileFacts, error)) (*Ledger, error) {
	main, err := filepath.Abs(main)
	if err != nil {
		return nil, fmt.Errorf("load ledger: %w", err)
	}
	l := &Ledger{Main: main, Options: map[string][]string{}}
	seen := map[string]bool{main: true}
	queue := []string{main}
	for len(queue) > 0 {
		path := queue[0]
		queue = queue[1:]
		facts, err := read(path)
		if err != nil {
			if path == main {
				return nil, fmt.Errorf("load ledger: %w", err)
			}
			l.Problems = append(l.Problems, fmt.Sprintf("read included file %s: %v", path, err))
			continue
		}
		l.Files = append(l.Files, path)
		if path == main {
			for _, o := range facts.options {
				l.Options[o[0]] = append(l.Options[o[0]], o[1])
			}
		}
		for _, inc := range facts.includes {
			matches, err := globInclude(filepath.Dir(path), inc)
			if err != nil || len(matches) == 0 {
				l.Problems = append(l.Problems, fmt.Sprintf("%s: file glob %q does not match any files", path, inc))
				continue
			}
			for _, m := range matches {
				if seen[m] {
					l.Problems = append(l.Problems, fmt.Sprintf("%s: duplicate filename parsed: %q", path, m))
					continue
				}
				seen[m] = true
				queue = append(queue, m)
			}
		}
	}
	l.Title = DefaultTitle
	if t := l.Options["title"]; len(t) > 0 {
		l.Title = t[len(t)-1]
	}
	l.Slug = LedgerSlug(l.Title, l.Main)
	return l, nil
}

// globInclude expands an include argument relative to dir as Python's
// glob.glob does: "**" is not recursive, wildcards do not match names
// starting with '.', and a pattern without wildcards names one file that
// must exist. Matches are absolute, cleaned and sorted.
func globInclude(dir, pattern string) ([]string, error) {
	if !filepath.IsAbs(pattern) {
		pattern = filepath.Join(dir, pattern)
	}
	pattern = filepath.Clean(pattern)
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return nil, err
	}
	out := matches[:0]
	for _, m := range matches {
		if hiddenByWildcard(pattern, m) {
			continue
		}
		if fi, err := os.Stat(m); err != nil || fi.IsDir() {
			continue
		}
		out = append(out, filepath.Clean(m))
	}
	slices.Sort(out)
	return out, nil
}

// hiddenByWildcard reports whether a wildcard component of pattern matched
// a name starting with '.' in match, which Python's glob skips.
func hiddenByWildcard(pattern, match string) bool {
	pc := strings.Split(pattern, string(filepath.Separator))
	mc := strings.Split(match, string(filepath.Separator))
	if len(pc) != len(mc) {
		return false
	}
	for i := range pc {
		if strings.HasPrefix(mc[i], ".") && !strings.HasPrefix(pc[i], ".") && strings.ContainsAny(pc[i], "*?[") {
			return true
		}
	}
	return false
}
