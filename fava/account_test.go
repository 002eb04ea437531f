package fava_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/fava"
)

func TestAddAccount(t *testing.T) {
	tests := []struct {
		name, body, field string
	}{
		{"Minimal", `{"account":"Assets:Bank:Checking"}`, ""},
		{"Full", `{"account":"Assets:Bank:Checking","date":"2024-01-01","currencies":["USD","EUR"],"booking":"FIFO","meta":{"iban":"DE00 1234","closed":false,"x-y":null}}`, ""},
		{"Nulls", `{"account":"Assets:Bank","date":null,"currencies":null,"booking":null,"meta":null}`, ""},
		{"Unicode", `{"account":"Expenses:Café:Ünterwegs"}`, ""},
		{"MissingAccount", `{"date":"2024-01-01"}`, "account"},
		{"AccountNewline", `{"account":"Assets:Bank\n2024-01-01 open Assets:Evil"}`, "account"},
		{"AccountBadRoot", `{"account":"Vermögen:Bank"}`, "account"},
		{"AccountNumber", `{"account":5}`, "account"},
		{"BadDate", `{"account":"Assets:Bank","date":"01/02/2024"}`, "date"},
		{"BadCurrency", `{"account":"Assets:Bank","currencies":["usd"]}`, "currencies[0]"},
		{"CurrencyNewline", `{"account":"Assets:Bank","currencies":["USD","EUR\n2024-01-01 open Assets:Evil"]}`, "currencies[1]"},
		{"DuplicateCurrency", `{"account":"Assets:Bank","currencies":["USD","USD"]}`, "currencies[1]"},
		{"CurrenciesString", `{"account":"Assets:Bank","currencies":"USD"}`, "currencies"},
		{"BadBooking", `{"account":"Assets:Bank","booking":"fifo"}`, "booking"},
		{"MetaKey", `{"account":"Assets:Bank","meta":{"Iban":"x"}}`, "meta"},
		{"MetaValueNewline", `{"account":"Assets:Bank","meta":{"iban":"x\ny"}}`, "meta.iban"},
		{"MetaNumber", `{"account":"Assets:Bank","meta":{"limit":5}}`, "meta.limit"},
		{"UnknownField", `{"account":"Assets:Bank","currency":"USD"}`, "currency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := fava.ParseAddAccount([]byte(tt.body))
			if err == nil {
				err = a.Validate(fava.Rules{})
			}
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			assertFieldError(t, err, tt.field)
		})
	}
	for _, bad := range []string{``, `[]`, `{"account":"Assets:A"} x`, `{"account":"Assets:A","account":"Assets:B"}`} {
		if _, err := fava.ParseAddAccount([]byte(bad)); err == nil {
			t.Errorf("ParseAddAccount(%q) accepted", bad)
		}
	}
}

// TestRenderOpenBeanCheck writes open directives RenderOpen made and checks
// them with bean-check.
func TestRenderOpenBeanCheck(t *testing.T) {
	bodies := []string{
		`{"account":"Assets:Bank:Checking"}`,
		`{"account":"Assets:Broker","date":"2023-12-31","currencies":["USD","EUR","NT.TO","A'B_C-D.E"],"booking":"FIFO"}`,
		`{"account":"Liabilities:Card","currencies":["USD"],"booking":"STRICT","meta":{"iban":"DE00 \"1234\" \\ x","closed":false,"open-ok":true,"x-y":null,"name":"Kreditkarte ✓"}}`,
		`{"account":"Expenses:Café:Ünterwegs-2","booking":"NONE"}`,
		`{"account":"Income:2024","booking":"AVERAGE"}`,
		`{"account":"Equity:Opening","booking":"LIFO"}`,
	}
	var ledger strings.Builder
	for _, body := range bodies {
		a, err := fava.ParseAddAccount([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Validate(fava.Rules{}); err != nil {
			t.Fatal(err)
		}
		open := fava.RenderOpen(a, "2024-06-01")
		if got, want := strings.Count(open, "\n"), 1+len(a.Meta); got != want {
			t.Fatalf("RenderOpen(%s) has %d lines, want %d:\n%s", body, got, want, open)
		}
		if a.Date == "" && !strings.HasPrefix(open, "2024-06-01 open ") {
			t.Errorf("RenderOpen ignored the default date: %q", open)
		}
		ledger.WriteString(open + "\n")
	}
	if out, err := beanCheck(t, ledger.String()); err != nil {
		t.Fatalf("bean-check: %v\n%s\nledger:\n%s", err, out, ledger.String())
	}
	a, _ := fava.ParseAddAccount([]byte(bodies[2]))
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	again, err := fava.ParseAddAccount(b)
	if err != nil {
		t.Fatal(err)
	}
	if fava.RenderOpen(again, "2024-06-01") != fava.RenderOpen(a, "2024-06-01") {
		t.Errorf("MarshalJSON does not round-trip: %s", b)
	}
}
