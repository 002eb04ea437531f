// Package beancount reads Beancount ledgers the way Beancount and Fava do:
// which files make up a ledger, where each directive starts and ends, and
// which links, tags, metadata and accounts it holds. It is written from the
// Beancount language documentation and holds no code of Beancount or Fava.
package beancount

import (
	"strconv"
	"strings"
	"unicode"

	"golang.org/x/text/unicode/norm"
)

// DefaultTitle is the title Beancount gives a ledger without a "title" option.
const DefaultTitle = "Beancount"

// Slugify turns a ledger title into the URL segment Fava serves it under:
// NFKC-normalize, drop every character that is neither a word character, nor
// whitespace, nor '-', trim, lowercase, and collapse runs of whitespace and
// '-' into one '-'.
func Slugify(s string) string {
	s = norm.NFKC.String(s)
	var kept strings.Builder
	for _, r := range s {
		if isWord(r) || isSpace(r) || r == '-' {
			kept.WriteRune(r)
		}
	}
	s = strings.ToLower(strings.TrimFunc(kept.String(), isSpace))
	var out strings.Builder
	dash := false
	for _, r := range s {
		if r == '-' || isSpace(r) {
			if !dash {
				out.WriteByte('-')
				dash = true
			}
			continue
		}
		dash = false
		out.WriteRune(r)
	}
	return out.String()
}

// LedgerSlug returns the slug Fava gives a ledger with the given title and
// main file path: the title's slug, or the path's when that is empty.
func LedgerSlug(title, mainFile string) string {
	if s := Slugify(title); s != "" {
		return s
	}
	return Slugify(mainFile)
}

// UniqueSlugs returns slugs made unique as Fava does for several ledgers:
// the second ledger with slug s is served as s-2, the third as s-3, in order.
func UniqueSlugs(slugs []string) []string {
	seen := make(map[string]bool, len(slugs))
	out := make([]string, len(slugs))
	for i, s := range slugs {
		key := s
		for n := 2; seen[key]; n++ {
			key = s + "-" + strconv.Itoa(n)
		}
		seen[key] = true
		out[i] = key
	}
	return out
}

// isWord matches Python's Unicode \w: alphanumerics and '_'.
func isWord(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.IsNumber(r)
}

// isSpace matches Python's Unicode \s and str.isspace.
func isSpace(r rune) bool {
	switch r {
	case '\x1c', '\x1d', '\x1e', '\x1f':
		return true
	}
	return unicode.IsSpace(r)
}
