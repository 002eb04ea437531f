package fava

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/favaproxy/favaproxy"
)

// DefaultRoots are Beancount's default names of the five root accounts.
var DefaultRoots = []string{"Assets", "Liabilities", "Equity", "Income", "Expenses"}

// Flags are the transaction flags accepted: those every Beancount version
// Fava supports parses as a transaction flag ('*' and the lexer's FLAG
// characters of 2.3, whose capitals 3.x reads as flags too).
const Flags = "*!&#?%PSTCURM"

// The grammar below is the intersection of what Beancount 2.3 and 3.x
// accept, and of Beancount's lexer and its core validation (the lexer takes
// any non-ASCII byte in an account name; beancount.core.account does not).

// CheckAccount returns why name is not an account of a ledger whose root
// accounts are roots (nil or empty: DefaultRoots), or "" if it is one:
// Root:Component[:Component…], each component starting with an uppercase
// letter or a digit and made of letters, digits and '-'.
func CheckAccount(name string, roots []string) string {
	if len(roots) == 0 {
		roots = DefaultRoots
	}
	parts := strings.Split(name, ":")
	if len(parts) < 2 {
		return fmt.Sprintf("account %s must have a root and at least one more component (Root:Name)", quoteShort(name))
	}
	rootOK := false
	for _, r := range roots {
		if parts[0] == r {
			rootOK = true
			break
		}
	}
	if !rootOK {
		return fmt.Sprintf("account %s does not start with one of the ledger's root accounts (%s)", quoteShort(name), strings.Join(roots, ", "))
	}
	for i, p := range parts[1:] {
		if why := checkComponent(p, false); why != "" {
			return fmt.Sprintf("account %s, component %d: %s", quoteShort(name), i+2, why)
		}
	}
	return ""
}

// CheckRoot returns why name cannot be a root account name, or "".
func CheckRoot(name string) string {
	return checkComponent(name, true)
}

func checkComponent(p string, root bool) string {
	if p == "" {
		return "empty"
	}
	for i, r := range p {
		if i == 0 {
			if !unicode.IsUpper(r) && (root || !unicode.Is(unicode.Nd, r)) {
				if root {
					return fmt.Sprintf("must start with an uppercase letter, not %q", r)
				}
				return fmt.Sprintf("must start with an uppercase letter or a digit, not %q", r)
			}
			continue
		}
		if !unicode.IsLetter(r) && !unicode.Is(unicode.Nd, r) && r != '-' {
			return fmt.Sprintf("character %q at position %d is not a letter, digit or '-'", r, i+1)
		}
	}
	return ""
}

// CheckCurrency returns why s is not a Beancount currency, or "":
// 2 to 24 characters, an uppercase ASCII letter first, an uppercase letter
// or digit last, and A-Z 0-9 ' . _ - between. (Beancount 3 also takes one
// letter and a leading '/'; 2.3 does not.)
func CheckCurrency(s string) string {
	if len(s) < 2 || len(s) > 24 {
		return fmt.Sprintf("currency %s must be 2 to 24 characters long", quoteShort(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		upper := 'A' <= c && c <= 'Z'
		digit := '0' <= c && c <= '9'
		switch {
		case i == 0 && !upper:
			return fmt.Sprintf("currency %s must start with an uppercase letter A-Z", quoteShort(s))
		case i == len(s)-1 && !upper && !digit:
			return fmt.Sprintf("currency %s must end with an uppercase letter or a digit", quoteShort(s))
		case !upper && !digit && c != '\'' && c != '.' && c != '_' && c != '-':
			return fmt.Sprintf("currency %s has a character not allowed at position %d (allowed: A-Z 0-9 ' . _ -)", quoteShort(s), i+1)
		}
	}
	return ""
}

// CheckDate returns why s is not a date Fava and Beancount both take, or "":
// YYYY-MM-DD, a real calendar date, year 1700 to 2099 (Beancount 3's lexer
// takes no other years).
func CheckDate(s string) string {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return fmt.Sprintf("date %s must be YYYY-MM-DD", quoteShort(s))
	}
	d, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return fmt.Sprintf("date %s is not a calendar date", quoteShort(s))
	}
	if y := d.Year(); y < 1700 || y > 2099 {
		return fmt.Sprintf("date %s: year must be between 1700 and 2099", quoteShort(s))
	}
	return ""
}

// CheckLink returns why s is not a valid link or tag name (without ^ or #).
func CheckLink(s string) string {
	if s == "" {
		return "must not be empty"
	}
	for i := 0; i < len(s); i++ {
		if !favaproxy.IsLinkChar(s[i]) {
			return fmt.Sprintf("%s has a character not allowed at position %d (allowed: A-Z a-z 0-9 - _ / .)", quoteShort(s), i+1)
		}
	}
	return ""
}

// CheckMetaKey returns why s is not a Beancount metadata key, or "":
// a lowercase ASCII letter, then at least one of a-z A-Z 0-9 - _ (the lexer
// needs two characters at least).
func CheckMetaKey(s string) string {
	if len(s) < 2 {
		return fmt.Sprintf("metadata key %s must be at least 2 characters long", quoteShort(s))
	}
	if s[0] < 'a' || s[0] > 'z' {
		return fmt.Sprintf("metadata key %s must start with a lowercase letter a-z", quoteShort(s))
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Sprintf("metadata key %s has a character not allowed at position %d (allowed: a-z A-Z 0-9 - _)", quoteShort(s), i+1)
		}
	}
	return ""
}

// CheckText returns why s cannot be printed inside a Beancount string, or "":
// it must be valid UTF-8 without control characters (newline, carriage
// return, tab, NUL, DEL, C1 controls) or Unicode line and paragraph
// separators, any of which could end a line in the ledger or in a tool
// reading it.
func CheckText(s string) string {
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			return fmt.Sprintf("invalid UTF-8 at byte %d", i+1)
		case unicode.IsControl(r) || r == '\u2028' || r == '\u2029':
			return fmt.Sprintf("control character %U at byte %d is not allowed", r, i+1)
		}
	}
	return ""
}

// CheckNumber returns why s is not a plain decimal number as Fava's Balance
// takes it, or "": an optional '-', digits, and optionally '.' and digits.
// (Python's Decimal would also take "NaN", "1e5" or "1_000", which Beancount
// cannot read back.)
func CheckNumber(s string) string {
	t := strings.TrimPrefix(s, "-")
	intPart, frac, hasDot := strings.Cut(t, ".")
	if intPart == "" || !allDigits(intPart) || (hasDot && !allDigits(frac)) {
		return fmt.Sprintf("number %s must be digits with an optional '-' and decimal point", quoteShort(s))
	}
	if why := checkDigits(t); why != "" {
		return why
	}
	return ""
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// quoteShort quotes s for an error message, cut to a readable length.
func quoteShort(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return fmt.Sprintf("%q…", s[:cut])
	}
	return fmt.Sprintf("%q", s)
}

// Validate checks the rules themselves: none or five distinct root names,
// each a valid root account name. Use it on roots read from a ledger's
// options.
func (r Rules) Validate() error {
	if len(r.Roots) == 0 {
		return nil
	}
	if len(r.Roots) != 5 {
		return fmt.Errorf("ledger rules: %d root account names, want 5", len(r.Roots))
	}
	for i, name := range r.Roots {
		if why := CheckRoot(name); why != "" {
			return fmt.Errorf("ledger rules: root account %q: %s", name, why)
		}
		for _, other := range r.Roots[:i] {
			if other == name {
				return fmt.Errorf("ledger rules: root account %q named twice", name)
			}
		}
	}
	return nil
}
