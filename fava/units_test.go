package fava

import (
	"math/big"
	"testing"
)

func TestPostingUnits(t *testing.T) {
	rat := func(s string) *big.Rat { r, _ := new(big.Rat).SetString(s); return r }
	for _, tc := range []struct {
		in          string
		num         *big.Rat
		cur         string
		cost, price bool
	}{
		{"", nil, "", false, false},
		{"12.50 USD", rat("12.50"), "USD", false, false},
		{"-1,000.25 EUR", rat("-1000.25"), "EUR", false, false},
		{"(2 + 3) * -2 USD", rat("-10"), "USD", false, false},
		{"10 HOOL {500 USD}", rat("10"), "HOOL", true, false},
		{"-11 EUR @ 1.136363 USD", rat("-11"), "EUR", false, true},
		{"5 HOOL {} @@ 30 USD", rat("5"), "HOOL", true, true},
		{"USD", nil, "USD", false, false},
		{"7", rat("7"), "", false, false},
		{"1/3 USD", rat("1/3"), "USD", false, false},
	} {
		u, err := PostingUnits(tc.in)
		if err != nil {
			t.Errorf("PostingUnits(%q): %v", tc.in, err)
			continue
		}
		if (u.Number == nil) != (tc.num == nil) || u.Number != nil && u.Number.Cmp(tc.num) != 0 ||
			u.Currency != tc.cur || u.Cost != tc.cost || u.Price != tc.price {
			t.Errorf("PostingUnits(%q) = %+v, want %v %q cost=%v price=%v", tc.in, u, tc.num, tc.cur, tc.cost, tc.price)
		}
		if u.Complete() != (tc.num != nil && tc.cur != "") {
			t.Errorf("PostingUnits(%q).Complete() = %v", tc.in, u.Complete())
		}
	}
	for _, bad := range []string{"1/0 USD", "12 usd", "USD USD", "1 ; x"} {
		if _, err := PostingUnits(bad); err == nil {
			t.Errorf("PostingUnits(%q): no error", bad)
		}
	}
}

func TestDecimal(t *testing.T) {
	for in, want := range map[string]bool{
		"0": true, "-10": true, "12.5": true, "1/8": true, "3/40": true,
		"1/3": false, "1/7": false, "1/6": false,
		"1234567890123456789012345678":  true,  // 28 digits
		"12345678901234567890123456789": false, // 29
		"1/1024":                        true,
	} {
		r, ok := new(big.Rat).SetString(in)
		if !ok {
			t.Fatalf("bad rat %q", in)
		}
		if got := Decimal(r); got != want {
			t.Errorf("Decimal(%s) = %v, want %v", in, got, want)
		}
	}
}
