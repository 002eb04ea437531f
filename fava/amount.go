package fava

import (
	"fmt"
	"math/big"
	"strings"
)

// CheckPostingAmount returns why s is not a posting amount Fava's
// add_entries takes, or "". Fava parses the string with Beancount as the
// rest of a posting line ("Assets:Account <amount>"); this accepts the part
// of that grammar that carries an amount and nothing else:
//
//	""                                  (no amount: Beancount interpolates)
//	[number-expression] [CURRENCY] [cost] [price]
//	cost  = "{" [component {"," component}] "}" or the same in "{{ }}"
//	component = [expr] ["#" [expr]] [CURRENCY] | YYYY-MM-DD | "label"
//	price = ("@" | "@@") [expr] [CURRENCY]
//
// The merge marker "*" in a cost is refused: Beancount 2.3 does not
// support it. Number expressions are Beancount's: numbers (1234, 1,234.56, 12.) joined
// by + - * / with parentheses and unary signs. Comments (;), strings outside
// a cost, newlines and anything else are refused.
func CheckPostingAmount(s string) string {
	if why := CheckText(s); why != "" {
		return why
	}
	toks, why := lexAmount(s)
	if why != "" {
		return why
	}
	p := amountParser{toks: toks}
	if why := p.posting(); why != "" {
		return fmt.Sprintf("amount %s: %s", quoteShort(s), why)
	}
	if !p.done() {
		return fmt.Sprintf("amount %s: unexpected %s", quoteShort(s), p.peek().desc())
	}
	return ""
}

type tokKind int

const (
	tEOF tokKind = iota
	tNumber
	tCurrency
	tDate
	tString
	tOp // + - * / ( ) { } {{ }} , # @ @@
)

type token struct {
	kind tokKind
	text string
}

func (t token) desc() string {
	if t.kind == tEOF {
		return "end of amount"
	}
	return fmt.Sprintf("%q", t.text)
}

func lexAmount(s string) ([]token, string) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case c >= '0' && c <= '9':
			if n := dateLen(s[i:]); n > 0 {
				toks = append(toks, token{tDate, s[i : i+n]})
				i += n
				continue
			}
			n := numberLen(s[i:])
			toks = append(toks, token{tNumber, s[i : i+n]})
			i += n
		case c >= 'A' && c <= 'Z':
			j := i + 1
			for j < len(s) && isCurrencyChar(s[j]) {
				j++
			}
			if why := CheckCurrency(s[i:j]); why != "" {
				return nil, why
			}
			toks = append(toks, token{tCurrency, s[i:j]})
			i = j
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] == '\\' {
					return nil, fmt.Sprintf("backslash at position %d: cost labels may not contain escapes", j+1)
				}
				j++
			}
			if j == len(s) {
				return nil, "unterminated string"
			}
			toks = append(toks, token{tString, s[i : j+1]})
			i = j + 1
		case c == '{' || c == '}' || c == '@':
			if i+1 < len(s) && s[i+1] == c {
				toks = append(toks, token{tOp, s[i : i+2]})
				i += 2
				continue
			}
			toks = append(toks, token{tOp, s[i : i+1]})
			i++
		case strings.IndexByte("+-*/(),#", c) >= 0:
			toks = append(toks, token{tOp, s[i : i+1]})
			i++
		default:
			return nil, fmt.Sprintf("amount %s: character %q at byte %d is not allowed", quoteShort(s), rune(s[i]), i+1)
		}
	}
	return toks, ""
}

func isCurrencyChar(c byte) bool {
	return 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '\'' || c == '.' || c == '_' || c == '-'
}

// dateLen returns the length of a YYYY-MM-DD date at the start of s, or 0.
func dateLen(s string) int {
	if len(s) < 10 || s[4] != '-' || s[7] != '-' || !allDigits(s[:4]) || !allDigits(s[5:7]) || !allDigits(s[8:10]) {
		return 0
	}
	if len(s) > 10 && s[10] >= '0' && s[10] <= '9' {
		return 0
	}
	return 10
}

// numberLen returns the length of Beancount's NUMBER token at the start of s
// (which starts with a digit): ([0-9]+|[0-9][0-9,]+[0-9])(\.[0-9]*)?
func numberLen(s string) int {
	j := 0
	for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == ',') {
		j++
	}
	for j > 1 && s[j-1] == ',' { // the integer part ends with a digit
		j--
	}
	if j < len(s) && s[j] == '.' {
		j++
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
	}
	return j
}

type amountParser struct {
	toks []token
	pos  int
}

func (p *amountParser) peek() token {
	if p.pos < len(p.toks) {
		return p.toks[p.pos]
	}
	return token{}
}

func (p *amountParser) done() bool { return p.pos >= len(p.toks) }

func (p *amountParser) isOp(op string) bool {
	t := p.peek()
	return t.kind == tOp && t.text == op
}

func (p *amountParser) posting() string {
	if why := p.incomplete(); why != "" {
		return why
	}
	if p.isOp("{") || p.isOp("{{") {
		if why := p.cost(); why != "" {
			return why
		}
	}
	if p.isOp("@") || p.isOp("@@") {
		p.pos++
		if p.done() {
			return "price is missing after @"
		}
		if why := p.incomplete(); why != "" {
			return why
		}
	}
	return ""
}

// incomplete parses [expr] [CURRENCY].
func (p *amountParser) incomplete() string {
	if p.startsExpr() {
		if why := p.expr(0); why != "" {
			return why
		}
	}
	if p.peek().kind == tCurrency {
		p.pos++
	}
	return ""
}

func (p *amountParser) cost() string {
	closing := "}"
	if p.peek().text == "{{" {
		closing = "}}"
	}
	p.pos++
	if p.isOp(closing) {
		p.pos++
		return ""
	}
	for {
		if why := p.costComponent(); why != "" {
			return why
		}
		switch {
		case p.isOp(","):
			p.pos++
		case p.isOp(closing):
			p.pos++
			return ""
		default:
			return fmt.Sprintf("cost: expected ',' or %q, found %s", closing, p.peek().desc())
		}
	}
}

func (p *amountParser) costComponent() string {
	t := p.peek()
	switch {
	case t.kind == tDate:
		p.pos++
		if why := CheckDate(t.text); why != "" {
			return "cost " + why
		}
		return ""
	case t.kind == tString:
		p.pos++
		if why := CheckText(t.text); why != "" {
			return "cost label: " + why
		}
		return ""
	}
	start := p.pos
	if p.startsExpr() {
		if why := p.expr(0); why != "" {
			return why
		}
	}
	if p.isOp("#") {
		p.pos++
		if p.startsExpr() {
			if why := p.expr(0); why != "" {
				return why
			}
		}
		if p.peek().kind != tCurrency {
			return fmt.Sprintf("cost: a currency must follow a total cost, found %s", p.peek().desc())
		}
	}
	if p.peek().kind == tCurrency {
		p.pos++
	}
	if p.pos == start {
		return fmt.Sprintf("cost: unexpected %s", p.peek().desc())
	}
	return ""
}

func (p *amountParser) startsExpr() bool {
	t := p.peek()
	return t.kind == tNumber || t.kind == tOp && (t.text == "(" || t.text == "-" || t.text == "+")
}

// expr parses Beancount's number_expr, nested depth levels deep, and
// evaluates it exactly (big.Rat), with Beancount's precedence: terms
// joined by + and -, factors joined by * and /. A division by zero, which
// Fava could only answer with an error after taking the request, is
// refused here.
func (p *amountParser) expr(depth int) string {
	_, why := p.sum(depth)
	return why
}

func (p *amountParser) sum(depth int) (*big.Rat, string) {
	v, why := p.term(depth)
	if why != "" {
		return nil, why
	}
	for p.isOp("+") || p.isOp("-") {
		minus := p.isOp("-")
		p.pos++
		w, why := p.term(depth)
		if why != "" {
			return nil, why
		}
		if minus {
			v.Sub(v, w)
		} else {
			v.Add(v, w)
		}
	}
	return v, ""
}

func (p *amountParser) term(depth int) (*big.Rat, string) {
	v, why := p.factor(depth)
	if why != "" {
		return nil, why
	}
	for p.isOp("*") || p.isOp("/") {
		div := p.isOp("/")
		p.pos++
		w, why := p.factor(depth)
		if why != "" {
			return nil, why
		}
		if div {
			if w.Sign() == 0 {
				return nil, "division by zero"
			}
			v.Quo(v, w)
		} else {
			v.Mul(v, w)
		}
	}
	return v, ""
}

func (p *amountParser) factor(depth int) (*big.Rat, string) {
	if depth > 32 {
		return nil, "number expression nested too deeply"
	}
	t := p.peek()
	switch {
	case t.kind == tNumber:
		p.pos++
		if why := checkDigits(t.text); why != "" {
			return nil, why
		}
		v, ok := new(big.Rat).SetString(strings.ReplaceAll(t.text, ",", ""))
		if !ok {
			return nil, fmt.Sprintf("%s is not a number", quoteShort(t.text))
		}
		return v, ""
	case t.kind == tOp && (t.text == "-" || t.text == "+"):
		p.pos++
		v, why := p.factor(depth + 1)
		if why == "" && t.text == "-" {
			v.Neg(v)
		}
		return v, why
	case t.kind == tOp && t.text == "(":
		p.pos++
		v, why := p.sum(depth + 1)
		if why != "" {
			return nil, why
		}
		if !p.isOp(")") {
			return nil, fmt.Sprintf("expected ')', found %s", p.peek().desc())
		}
		p.pos++
		return v, ""
	}
	return nil, fmt.Sprintf("expected a number, found %s", t.desc())
}

// MaxDigits is the most significant digits Beancount keeps of a number
// (Python's decimal context, precision 28): a number with more is rounded
// when the ledger is read, and its transaction no longer balances.
const MaxDigits = 28

// checkDigits returns why the number literal s has more significant digits
// than Beancount keeps, or "".
func checkDigits(s string) string {
	n, leading := 0, true
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			continue
		}
		if leading && c == '0' {
			continue
		}
		leading = false
		n++
	}
	if n > MaxDigits {
		return fmt.Sprintf("number %s has %d significant digits, more than the %d Beancount keeps", quoteShort(s), n, MaxDigits)
	}
	return ""
}
