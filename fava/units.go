package fava

import (
	"fmt"
	"math/big"
	"strings"
)

// Units is the units part of a posting amount as Beancount reads it: the
// number and currency before any cost or price.
type Units struct {
	// Number is the evaluated number expression, exact; nil when the
	// amount has none (Beancount interpolates it).
	Number *big.Rat
	// Currency is "" when the amount names none (Beancount infers it).
	Currency string
	// Places are the decimal places of the number as written ("1.50": 2),
	// which Beancount's precision inference goes by; -1 for an expression
	// ("1.5+1.5"), whose places Python's decimal arithmetic decides ("3.0":
	// 1), not its value.
	Places int
	// Cost and Price report a cost ({…}) or a price (@, @@) after the
	// units: the posting's weight is then not its units.
	Cost, Price bool
}

// Complete reports whether the units have both a number and a currency.
func (u Units) Complete() bool { return u.Number != nil && u.Currency != "" }

// PostingUnits returns the units of a posting amount (see
// CheckPostingAmount for the grammar). "" has no number and no currency.
func PostingUnits(s string) (Units, error) {
	if why := CheckPostingAmount(s); why != "" {
		return Units{}, fmt.Errorf("%s", why)
	}
	toks, _ := lexAmount(s)
	p := amountParser{toks: toks}
	var u Units
	if p.startsExpr() {
		start := p.pos
		v, why := p.sum(0)
		if why != "" {
			return Units{}, fmt.Errorf("amount %s: %s", quoteShort(s), why)
		}
		u.Number, u.Places = v, -1
		if lit := p.toks[p.pos-1]; lit.kind == tNumber && (p.pos-start == 1 || p.pos-start == 2 && p.toks[start].kind == tOp) {
			u.Places = 0
			if _, frac, ok := strings.Cut(lit.text, "."); ok {
				u.Places = len(frac)
			}
		}
	}
	if p.peek().kind == tCurrency {
		u.Currency = p.peek().text
		p.pos++
	}
	u.Cost = p.isOp("{") || p.isOp("{{")
	for ; !p.done(); p.pos++ {
		if p.isOp("@") || p.isOp("@@") {
			u.Price = true
		}
	}
	return u, nil
}

// DecimalPlaces returns the number of decimal places of r written as a
// decimal (0 for an integer), and false when r is not a terminating decimal.
func DecimalPlaces(r *big.Rat) (int, bool) {
	d := new(big.Int).Set(r.Denom())
	places := 0
	for _, f := range []*big.Int{big.NewInt(2), big.NewInt(5)} {
		n := 0
		q, m := new(big.Int), new(big.Int)
		for {
			q.QuoRem(d, f, m)
			if m.Sign() != 0 {
				break
			}
			d.Set(q)
			n++
		}
		places = max(places, n)
	}
	return places, d.IsInt64() && d.Int64() == 1
}

// Decimal reports whether r is a number Beancount holds exactly: a
// terminating decimal of at most MaxDigits significant digits. Beancount
// rounds any other result of a number expression (1/3) when it reads it.
func Decimal(r *big.Rat) bool {
	places, ok := DecimalPlaces(r)
	return ok && checkDigits(r.FloatString(places)) == ""
}

// FormatDecimal writes r as a decimal with as many places as it needs
// (at most MaxDigits for a number that does not terminate).
func FormatDecimal(r *big.Rat) string {
	places, ok := DecimalPlaces(r)
	if !ok {
		places = MaxDigits
	}
	return r.FloatString(places)
}
