package favatest

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"
)

// DefaultCurrencyColumn is Fava's default currency-column option.
const DefaultCurrencyColumn = 61

// newEntry is an entry received by add_entries, ready to render.
type newEntry struct {
	kind     string // Transaction, Balance, Note
	date     string
	meta     map[string]any
	flag     string
	payee    string
	narr     string
	tags     []string
	links    []string
	postings []newPosting
	account  string
	amount   string // Balance: "number currency"
	comment  string
}

type newPosting struct {
	account  string
	position string // rendered units, cost and price; empty when no units
	meta     map[string]any
}

// uncaughtError is an exception Fava does not turn into a JSON answer: the
// client gets an HTML 500.
type uncaughtError struct{ msg string }

func (e *uncaughtError) Error() string { return e.msg }

var dateOnlyRe = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)

func keyError(k string) *apiError { return plainError(fmt.Sprintf("KeyError: '%s'", k)) }

// deserialise turns one JSON entry into a newEntry as Fava's deserialise
// does, including which error it raises first.
func deserialise(raw any) (*newEntry, error) {
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, &uncaughtError{"AttributeError: entry is not an object"}
	}
	date, _ := obj["date"].(string)
	if !dateOnlyRe.MatchString(date) {
		return nil, plainError("Invalid entry date.")
	}
	t, ok := obj["t"]
	if !ok {
		return nil, keyError("t")
	}
	e := &newEntry{date: date}
	switch t {
	case "Transaction":
		e.kind = "Transaction"
		rawPostings, ok := obj["postings"]
		if !ok {
			return nil, keyError("postings")
		}
		list, _ := rawPostings.([]any)
		for _, rp := range list {
			p, ok := rp.(map[string]any)
			if !ok {
				return nil, &uncaughtError{"AttributeError: posting is not an object"}
			}
			amount, _ := p["amount"].(string)
			pos, err := parseAmount(amount)
			if err != nil {
				return nil, err
			}
			acc, ok := p["account"]
			if !ok {
				return nil, keyError("account")
			}
			np := newPosting{account: fmt.Sprint(acc), position: pos}
			np.meta, _ = p["meta"].(map[string]any)
			e.postings = append(e.postings, np)
		}
		m, ok := obj["meta"]
		if !ok {
			return nil, keyError("meta")
		}
		e.meta, _ = m.(map[string]any)
		e.flag = str(obj["flag"])
		e.payee = str(obj["payee"])
		n, ok := obj["narration"]
		if !ok {
			return nil, keyError("narration")
		}
		e.narr = str(n)
		for _, k := range []string{"tags", "links"} {
			v, ok := obj[k]
			if !ok {
				return nil, keyError(k)
			}
			l, _ := v.([]any)
			set := map[string]bool{}
			for _, x := range l {
				set[fmt.Sprint(x)] = true
			}
			var out []string
			for x := range set {
				out = append(out, x)
			}
			sort.Strings(out)
			if k == "tags" {
				e.tags = out
			} else {
				e.links = out
			}
		}
	case "Balance":
		e.kind = "Balance"
		a, ok := obj["amount"]
		if !ok {
			return nil, keyError("amount")
		}
		am, _ := a.(map[string]any)
		num, ok := am["number"]
		if !ok {
			return nil, keyError("number")
		}
		n, err := pyDecimal(num)
		if err != nil {
			return nil, err
		}
		cur, ok := am["currency"]
		if !ok {
			return nil, keyError("currency")
		}
		e.amount = n + " " + fmt.Sprint(cur)
		if err := e.readMetaAccount(obj); err != nil {
			return nil, err
		}
	case "Note":
		e.kind = "Note"
		c, ok := obj["comment"]
		if !ok {
			return nil, keyError("comment")
		}
		e.comment = strings.ReplaceAll(fmt.Sprint(c), `"`, "")
		if err := e.readMetaAccount(obj); err != nil {
			return nil, err
		}
	default:
		return nil, plainError("Unsupported entry type.")
	}
	return e, nil
}

// readMetaAccount reads the meta and account fields of a Balance or a
// Note, in the order Fava's deserialise reads them.
func (e *newEntry) readMetaAccount(obj map[string]any) error {
	m, ok := obj["meta"]
	if !ok {
		return keyError("meta")
	}
	e.meta, _ = m.(map[string]any)
	acc, ok := obj["account"]
	if !ok {
		return keyError("account")
	}
	e.account = fmt.Sprint(acc)
	return nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

var (
	// beancountNumber is the number token of Beancount's lexer.
	beancountNumber = regexp.MustCompile(`^[-+]?(?:[0-9]+|[0-9][0-9,]+[0-9])(?:\.[0-9]*)?$`)
	currencyRe      = regexp.MustCompile(`^[A-Z][A-Z0-9'._-]{0,22}[A-Z0-9]$|^[A-Z]$`)
	decimalRe       = regexp.MustCompile(`^\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*$`)
)

// parseAmount checks a posting amount ("12.5 USD", "-11 EUR @ 1.13 USD",
// "" for none) as Fava does by parsing it with Beancount, and returns the
// position as Beancount prints it. Arithmetic is not supported.
func parseAmount(amount string) (string, error) {
	invalid := plainError("Invalid amount: " + amount)
	if strings.TrimSpace(amount) == "" {
		return "", nil
	}
	rest := strings.TrimSpace(amount)
	if i := strings.Index(rest, ";"); i >= 0 {
		rest = strings.TrimSpace(rest[:i])
	}
	units, rest, ok := numberCurrency(rest)
	if !ok {
		return "", invalid
	}
	out := units
	if strings.HasPrefix(rest, "{") {
		j := strings.Index(rest, "}")
		if j < 0 {
			return "", invalid
		}
		out += " {" + strings.Join(strings.Fields(rest[1:j]), " ") + "}"
		rest = strings.TrimSpace(rest[j+1:])
	}
	if strings.HasPrefix(rest, "@") {
		op := "@"
		if strings.HasPrefix(rest, "@@") {
			op = "@@"
		}
		price, tail, ok := numberCurrency(strings.TrimSpace(rest[len(op):]))
		if !ok || tail != "" {
			return "", invalid
		}
		out += " " + op + " " + price
		rest = ""
	}
	if rest != "" {
		return "", invalid
	}
	return out, nil
}

// numberCurrency reads "NUMBER CURRENCY" from the start of s and returns it
// as Beancount prints it, plus what follows.
func numberCurrency(s string) (string, string, bool) {
	f := strings.Fields(s)
	if len(f) < 2 || !beancountNumber.MatchString(f[0]) || !currencyRe.MatchString(f[1]) {
		return "", "", false
	}
	n := normalizeNumber(strings.ReplaceAll(f[0], ",", ""))
	rest := strings.TrimSpace(s[strings.Index(s, f[1])+len(f[1]):])
	return n + " " + f[1], rest, true
}

// normalizeNumber prints a plain decimal as Python's str(Decimal) does.
func normalizeNumber(n string) string {
	sign := ""
	switch {
	case strings.HasPrefix(n, "-"):
		sign, n = "-", n[1:]
	case strings.HasPrefix(n, "+"):
		n = n[1:]
	}
	intPart, frac, hasDot := strings.Cut(n, ".")
	intPart = strings.TrimLeft(intPart, "0")
	if intPart == "" {
		intPart = "0"
	}
	if hasDot && frac != "" {
		return sign + intPart + "." + frac
	}
	return sign + intPart
}

// pyDecimal converts a JSON value as Python's Decimal() would, for the
// plain forms; anything else raises, which Fava does not catch.
func pyDecimal(v any) (string, error) {
	switch x := v.(type) {
	case string:
		switch {
		case !decimalRe.MatchString(x):
			return "", &uncaughtError{"decimal.InvalidOperation"}
		case strings.ContainsAny(x, "eE"):
			return strings.TrimSpace(x), nil
		}
		return normalizeNumber(strings.TrimSpace(x)), nil
	case json.Number:
		return x.String(), nil
	}
	return "", &uncaughtError{"TypeError: conversion from this type to Decimal is not supported"}
}

// escapeString escapes as Beancount's printer does for payee, narration and
// string metadata.
func escapeString(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`)
}

// metaLines prints metadata like Beancount's printer: sorted keys, strings
// quoted and escaped, booleans TRUE/FALSE, null empty; numbers make the
// printer raise, which Fava does not catch.
func metaLines(meta map[string]any, prefix string, dropUnderscore bool) (string, error) {
	keys := make([]string, 0, len(meta))
	for k := range meta {
		if k == "filename" || k == "lineno" || k == "__automatic__" || (dropUnderscore && strings.HasPrefix(k, "_")) {
			continue
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		var v string
		switch x := meta[k].(type) {
		case string:
			v = `"` + escapeString(x) + `"`
		case bool:
			v = "FALSE"
			if x {
				v = "TRUE"
			}
		case nil:
			v = ""
		case map[string]any:
			continue
		default:
			return "", &uncaughtError{fmt.Sprintf("ValueError: Unexpected value: '%v'", x)}
		}
		fmt.Fprintf(&b, "%s%s: %s\n", prefix, k, v)
	}
	return b.String(), nil
}

// render prints e as Fava's to_string does: Beancount's printer, then
// currencies aligned at currencyColumn, then trailing blanks stripped from
// every line. The result ends with "\n".
func (e *newEntry) render(currencyColumn int) (string, error) {
	var b strings.Builder
	meta, err := metaLines(e.meta, "  ", true)
	if err != nil {
		return "", err
	}
	switch e.kind {
	case "Transaction":
		var strs []string
		if e.payee != "" {
			strs = append(strs, `"`+escapeString(e.payee)+`"`)
		}
		if e.narr != "" {
			strs = append(strs, `"`+escapeString(e.narr)+`"`)
		} else if e.payee != "" {
			strs = append(strs, `""`)
		}
		for _, t := range e.tags {
			strs = append(strs, "#"+t)
		}
		for _, l := range e.links {
			strs = append(strs, "^"+l)
		}
		fmt.Fprintf(&b, "%s %s %s\n", e.date, e.flag, strings.Join(strs, " "))
		b.WriteString(meta)
		width := 1
		for _, p := range e.postings {
			width = max(width, utf8.RuneCountInString(p.account))
		}
		for _, p := range e.postings {
			line := "  " + p.account + strings.Repeat(" ", width-utf8.RuneCountInString(p.account)) + "  " + p.position
			b.WriteString(strings.TrimRight(line, " ") + "\n")
			pm, err := metaLines(p.meta, "    ", false)
			if err != nil {
				return "", err
			}
			b.WriteString(pm)
		}
	case "Balance":
		acc := e.account
		if n := utf8.RuneCountInString(acc); n < 47 {
			acc += strings.Repeat(" ", 47-n)
		}
		fmt.Fprintf(&b, "%s balance %s %s\n", e.date, acc, e.amount)
		b.WriteString(meta)
	case "Note":
		fmt.Fprintf(&b, "%s note %s \"%s\"\n", e.date, e.account, e.comment)
		b.WriteString(meta)
	}
	aligned := align(b.String(), currencyColumn)
	lines := strings.Split(aligned, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t\r\v\f")
	}
	return strings.Join(lines, "\n"), nil
}

var alignRe = regexp.MustCompile(`^([^";]*?)\s+([-+]?\s*[\d,]+(?:\.\d*)?)\s+([A-Z][A-Z0-9'._-]{0,22}[A-Z0-9]\b.*)`)

// align lines up the currencies of s at currencyColumn (1-based), as
// Fava's align does.
func align(s string, currencyColumn int) string {
	var b strings.Builder
	for _, line := range splitLines(s) {
		if m := alignRe.FindStringSubmatch(line); m != nil {
			prefix, number, rest := m[1], m[2], m[3]
			n := currencyColumn - utf8.RuneCountInString(prefix) - utf8.RuneCountInString(number) - 4
			b.WriteString(prefix + strings.Repeat(" ", max(n, 0)) + "  " + number + " " + rest)
		} else {
			b.WriteString(line)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// splitLines splits like Python's str.splitlines.
func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch r {
		case '\n', '\v', '\f', '\x1c', '\x1d', '\x1e', '\u0085', '\u2028', '\u2029':
			out = append(out, s[start:i])
			start = i + size
		case '\r':
			out = append(out, s[start:i])
			if i+1 < len(s) && s[i+1] == '\n' {
				size++
			}
			start = i + size
		}
		i += size
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}
