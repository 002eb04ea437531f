package fava

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/favaproxy/favaproxy"
)

// BookingMethods are Beancount's booking methods an open directive may
// name. STRICT_WITH_SIZE and HIFO exist from Beancount 3 on; Beancount 2.3
// reports them as an error in the ledger.
var BookingMethods = []string{"STRICT", "STRICT_WITH_SIZE", "NONE", "AVERAGE", "FIFO", "LIFO", "HIFO"}

// AddAccount is a request to favaproxy's own add_account endpoint: open an
// account.
type AddAccount struct {
	Account    string
	Date       string // YYYY-MM-DD; "" means the caller's today
	Currencies []string
	Booking    string // one of BookingMethods, or ""
	Meta       Meta
}

// ParseAddAccount reads an add_account body strictly: one JSON object with
// "account" (required), and optionally "date", "currencies", "booking" and
// "meta" (null is the same as absent). Unknown keys are refused, so that a
// misspelt option is not silently ignored. Values are checked by Validate.
func ParseAddAccount(body []byte) (*AddAccount, error) {
	if _, err := Canonical(body); err != nil {
		return nil, favaproxy.Errorf(favaproxy.EInvalid, "invalid JSON body: %v", err)
	}
	obj, err := fields("body", body)
	if err != nil {
		return nil, favaproxy.Errorf(favaproxy.EInvalid, "body must be a JSON object")
	}
	for k := range obj {
		switch k {
		case "account", "date", "currencies", "booking", "meta":
		default:
			return nil, favaproxy.FieldErrorf(k, "unknown field (allowed: account, date, currencies, booking, meta)")
		}
	}
	a := &AddAccount{}
	if err := getString(obj, "", "account", true, false, &a.Account); err != nil {
		return nil, err
	}
	if err := getString(obj, "", "date", false, true, &a.Date); err != nil {
		return nil, err
	}
	if err := getString(obj, "", "booking", false, true, &a.Booking); err != nil {
		return nil, err
	}
	if raw, ok := obj["currencies"]; ok && !isNull(raw) {
		if err := getStrings(obj, "", "currencies", &a.Currencies); err != nil {
			return nil, err
		}
	}
	if err := getMeta(obj, "", false, &a.Meta); err != nil {
		return nil, err
	}
	return a, nil
}

// Validate checks the request against Beancount's grammar and the ledger's
// root accounts. Errors are EInvalid *favaproxy.Error values naming the
// field.
func (a *AddAccount) Validate(r Rules) error {
	if err := fieldErr("account", CheckAccount(a.Account, r.Roots)); err != nil {
		return err
	}
	if a.Date != "" {
		if err := fieldErr("date", CheckDate(a.Date)); err != nil {
			return err
		}
	}
	for i, c := range a.Currencies {
		if err := fieldErr(fmt.Sprintf("currencies[%d]", i), CheckCurrency(c)); err != nil {
			return err
		}
		if slices.Contains(a.Currencies[:i], c) {
			return favaproxy.FieldErrorf(fmt.Sprintf("currencies[%d]", i), "currency %s is listed twice", quoteShort(c))
		}
	}
	if a.Booking != "" && !slices.Contains(BookingMethods, a.Booking) {
		return favaproxy.FieldErrorf("booking", "booking method %s must be one of %s", quoteShort(a.Booking), strings.Join(BookingMethods, ", "))
	}
	return validateMeta("meta", a.Meta)
}

// RenderOpen returns the Beancount open directive for a validated a, dated
// a.Date, or date when a.Date is empty: one line, then one line per
// metadata entry (sorted by key, indented two spaces), each ending in "\n".
func RenderOpen(a *AddAccount, date string) string {
	if a.Date != "" {
		date = a.Date
	}
	var b strings.Builder
	b.WriteString(date + " open " + a.Account)
	if len(a.Currencies) > 0 {
		b.WriteString(" " + strings.Join(a.Currencies, ","))
	}
	if a.Booking != "" {
		b.WriteString(` "` + a.Booking + `"`)
	}
	b.WriteString("\n")
	for _, k := range slices.Sorted(maps.Keys(a.Meta)) {
		b.WriteString("  " + k + ":")
		switch v := a.Meta[k].(type) {
		case string:
			b.WriteString(" " + quoteBeancount(v))
		case bool:
			if v {
				b.WriteString(" TRUE")
			} else {
				b.WriteString(" FALSE")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// quoteBeancount returns s as a Beancount string literal.
func quoteBeancount(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// MarshalJSON writes the request as the add_account body it was read from
// (without empty optional fields).
func (a *AddAccount) MarshalJSON() ([]byte, error) {
	type body struct {
		Account    string   `json:"account"`
		Date       string   `json:"date,omitempty"`
		Currencies []string `json:"currencies,omitempty"`
		Booking    string   `json:"booking,omitempty"`
		Meta       Meta     `json:"meta,omitempty"`
	}
	return json.Marshal(body{a.Account, a.Date, a.Currencies, a.Booking, a.Meta})
}
