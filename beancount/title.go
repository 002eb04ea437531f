package beancount

import (
	"bufio"
	"os"
	"strings"
)

// ReadTitle returns the value of the ledger's `option "title"` in its main
// file, or "" if there is none. Like Beancount, the last title option wins.
func ReadTitle(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var title string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "option")
		if !ok {
			continue
		}
		rest = strings.TrimLeft(rest, " \t")
		name, rest, ok := cutString(rest)
		if !ok || name != "title" {
			continue
		}
		if value, _, ok := cutString(strings.TrimLeft(rest, " \t")); ok {
			title = value
		}
	}
	return title, sc.Err()
}

// cutString reads a double-quoted Beancount string with backslash escapes at
// the start of s and returns its value and the rest of s.
func cutString(s string) (value, rest string, ok bool) {
	if !strings.HasPrefix(s, `"`) {
		return "", s, false
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		case '"':
			return b.String(), s[i+1:], true
		default:
			b.WriteByte(c)
		}
	}
	return "", s, false
}
