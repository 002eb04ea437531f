package fava_test

import (
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/fava"
)

// TestAmountLimits pins two amounts that passed validation and then
// failed: a number with more significant digits than Beancount keeps (300
// digits were accepted, and the ledger no longer passed bean-check) and an
// expression that divides by zero (Fava took it and answered 500).
func TestAmountLimits(t *testing.T) {
	digits := func(n int) string { return strings.Repeat("1", n) }
	for _, tc := range []struct {
		amount string
		ok     bool
	}{
		{digits(28) + " USD", true},
		{"0.000" + digits(28) + " USD", true},
		{digits(14) + "." + digits(14) + " USD", true},
		{digits(29) + " USD", false},
		{digits(300) + " USD", false},
		{"1/0 USD", false},
		{"1/(2-2) USD", false},
		{"(1+2)/3 USD", true},
		{"1-1/0.00 USD", false},
		{"10 USD @ 1/0 EUR", false},
		{"2*3+4/2 USD", true},
	} {
		if why := fava.CheckPostingAmount(tc.amount); (why == "") != tc.ok {
			t.Errorf("CheckPostingAmount(%q) = %q, want ok=%v", tc.amount, why, tc.ok)
		}
	}
	if why := fava.CheckNumber(digits(29)); why == "" {
		t.Errorf("CheckNumber accepts 29 digits")
	}
	if why := fava.CheckNumber("-" + digits(28)); why != "" {
		t.Errorf("CheckNumber refuses 28 digits: %s", why)
	}
}
