package fava_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/fava"
)

func readExample(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile("testdata/add_entries_example.json")
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestParseAddEntriesExample(t *testing.T) {
	a, err := fava.ParseAddEntries(readExample(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Validate(fava.Rules{}); err != nil {
		t.Fatal(err)
	}
	if got, want := len(a.Entries), 4; got != want {
		t.Fatalf("entries=%d, want %d", got, want)
	}
	tx := a.Typed[0]
	if tx.Payee != `Shop "Q"` || tx.Flag != "!" || len(tx.Postings) != 3 || tx.Postings[1].Amount != "-11 EUR @ 1.136363 USD" {
		t.Errorf("transaction read as %+v", tx)
	}
	if got, want := tx.Postings[0].Meta["item"], any("bread"); got != want {
		t.Errorf("posting meta item=%v, want %v", got, want)
	}
	if b := a.Typed[2]; b.Number != "100.00" || b.Currency != "USD" || b.Account != "Assets:Bank" {
		t.Errorf("balance read as %+v", b)
	}
	// A field favaproxy does not know is forwarded untouched.
	if !bytes.Contains(a.Entries[3], []byte(`"x-client-field": [1, 2]`)) {
		t.Errorf("raw entry lost a field: %s", a.Entries[3])
	}
	body := fava.AddEntriesBody(a.Entries)
	again, err := fava.ParseAddEntries(body)
	if err != nil {
		t.Fatalf("AddEntriesBody output does not parse: %v\n%s", err, body)
	}
	if got, want := fava.Fingerprint("add_entries", "l", again.Entries), fava.Fingerprint("add_entries", "l", a.Entries); got != want {
		t.Errorf("fingerprint changed through AddEntriesBody")
	}
}

// entry builds a one-entry body from a valid Transaction with one field
// replaced (or removed, with value nil).
func txBody(tb testing.TB, field string, value any) []byte {
	tb.Helper()
	e := map[string]any{
		"t": "Transaction", "date": "2024-01-02", "flag": "*", "payee": "P", "narration": "N",
		"tags": []string{"t1"}, "links": []string{"l1"}, "meta": map[string]any{"note": "x"},
		"postings": []any{
			map[string]any{"account": "Expenses:Food", "amount": "10 USD"},
			map[string]any{"account": "Assets:Cash", "amount": ""},
		},
	}
	if value == nil {
		delete(e, field)
	} else {
		e[field] = value
	}
	b, err := json.Marshal(map[string]any{"entries": []any{e}})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestValidateAddEntries(t *testing.T) {
	posting := func(account, amount string) []any {
		return []any{map[string]any{"account": account, "amount": amount}}
	}
	tests := []struct {
		name  string
		body  []byte
		field string // "" = accepted
	}{
		{"Valid", txBody(t, "flag", "*"), ""},
		{"NullPayee", txBody(t, "payee", json.RawMessage("null")), ""},
		{"NoPayee", txBody(t, "payee", nil), ""},
		{"NullNarration", txBody(t, "narration", json.RawMessage("null")), ""},
		{"UnicodeAccount", txBody(t, "postings", posting("Expenses:Café:Ünterwegs-2", "1 EUR")), ""},
		{"DigitComponent", txBody(t, "postings", posting("Assets:2024:Bank", "1 EUR")), ""},
		{"CostAndPrice", txBody(t, "postings", posting("Assets:Stock", "10 HOOL {500.00 USD, 2024-01-01, \"lot 1\"} @ 510 USD")), ""},
		{"TotalCost", txBody(t, "postings", posting("Assets:Stock", "10 HOOL {{5000 USD}}")), ""},
		{"CompoundCost", txBody(t, "postings", posting("Assets:Stock", "10 HOOL {500 # 9.95 USD}")), ""},
		{"EmptyCost", txBody(t, "postings", posting("Assets:Stock", "-10 HOOL {}")), ""},
		{"TotalPrice", txBody(t, "postings", posting("Assets:Cash", "-11 EUR @@ 12.50 USD")), ""},
		{"Expression", txBody(t, "postings", posting("Assets:Cash", "(10 + 2.5) / 3 * -1 USD")), ""},
		{"Thousands", txBody(t, "postings", posting("Assets:Cash", "1,234.56 USD")), ""},
		{"CurrencyOnly", txBody(t, "postings", posting("Assets:Cash", "USD")), ""},
		{"StockTicker", txBody(t, "postings", posting("Assets:Cash", "1 NT.TO")), ""},
		{"MetaBoolNull", txBody(t, "meta", map[string]any{"ok": true, "gone": nil, "k-2_x": "v"}), ""},

		{"MissingFlag", txBody(t, "flag", nil), "entries[0].flag"},
		{"EmptyFlag", txBody(t, "flag", ""), "entries[0].flag"},
		{"BadFlag", txBody(t, "flag", "x"), "entries[0].flag"},
		{"MissingDate", txBody(t, "date", nil), "entries[0].date"},
		{"BadDate", txBody(t, "date", "2024-02-30"), "entries[0].date"},
		{"ShortDate", txBody(t, "date", "2024-2-3"), "entries[0].date"},
		{"YearOutOfRange", txBody(t, "date", "2124-01-01"), "entries[0].date"},
		{"NumberDate", txBody(t, "date", 20240101), "entries[0].date"},
		{"MissingMeta", txBody(t, "meta", nil), "entries[0].meta"},
		{"NullMeta", txBody(t, "meta", json.RawMessage("null")), "entries[0].meta"},
		{"MetaNumber", txBody(t, "meta", map[string]any{"amount": 5}), "entries[0].meta.amount"},
		{"MetaList", txBody(t, "meta", map[string]any{"list": []int{1}}), "entries[0].meta.list"},
		{"MetaKeyUpper", txBody(t, "meta", map[string]any{"Key": "v"}), "entries[0].meta"},
		{"MetaKeyShort", txBody(t, "meta", map[string]any{"k": "v"}), "entries[0].meta"},
		{"MetaKeyNewline", txBody(t, "meta", map[string]any{"ke\ny": "v"}), "entries[0].meta"},
		{"MetaValueNewline", txBody(t, "meta", map[string]any{"note": "a\n2024-01-01 open Assets:Evil"}), "entries[0].meta.note"},
		{"NarrationNewline", txBody(t, "narration", "x\n2024-01-01 open Assets:Evil"), "entries[0].narration"},
		{"NarrationCR", txBody(t, "narration", "x\ry"), "entries[0].narration"},
		{"NarrationNUL", txBody(t, "narration", "x\x00y"), "entries[0].narration"},
		{"NarrationLineSeparator", txBody(t, "narration", "x\u2028y"), "entries[0].narration"},
		{"PayeeC1", txBody(t, "payee", "x\u0085y"), "entries[0].payee"},
		{"PayeeNumber", txBody(t, "payee", 3), "entries[0].payee"},
		{"TagsString", txBody(t, "tags", "abc"), "entries[0].tags"},
		{"TagsNull", txBody(t, "tags", json.RawMessage("null")), "entries[0].tags"},
		{"MissingLinks", txBody(t, "links", nil), "entries[0].links"},
		{"TagSpace", txBody(t, "tags", []string{"a b"}), "entries[0].tags[0]"},
		{"LinkNewline", txBody(t, "links", []string{"ok", "x\n2024-01-01 open Assets:Evil"}), "entries[0].links[1]"},
		{"LinkEmpty", txBody(t, "links", []string{""}), "entries[0].links[0]"},
		{"MissingPostings", txBody(t, "postings", nil), "entries[0].postings"},
		{"PostingNotObject", txBody(t, "postings", []any{"Assets:Cash 1 USD"}), "entries[0].postings[0]"},
		{"AccountNewline", txBody(t, "postings", posting("Assets:Cash\n2024-01-01 open Assets:Evil", "1 USD")), "entries[0].postings[0].account"},
		{"AccountBadRoot", txBody(t, "postings", posting("Asset:Cash", "1 USD")), "entries[0].postings[0].account"},
		{"AccountOneComponent", txBody(t, "postings", posting("Assets", "1 USD")), "entries[0].postings[0].account"},
		{"AccountLowercase", txBody(t, "postings", posting("Assets:cash", "1 USD")), "entries[0].postings[0].account"},
		{"AccountEmptyComponent", txBody(t, "postings", posting("Assets::Cash", "1 USD")), "entries[0].postings[0].account"},
		{"AccountSpace", txBody(t, "postings", posting("Assets:My Cash", "1 USD")), "entries[0].postings[0].account"},
		{"AccountMissing", txBody(t, "postings", []any{map[string]any{"amount": "1 USD"}}), "entries[0].postings[0].account"},
		{"AmountNewline", txBody(t, "postings", posting("Assets:Cash", "1 USD\n2024-01-01 open Assets:Evil")), "entries[0].postings[0].amount"},
		{"AmountComment", txBody(t, "postings", posting("Assets:Cash", "1 USD ; hi")), "entries[0].postings[0].amount"},
		{"AmountLowercaseCurrency", txBody(t, "postings", posting("Assets:Cash", "1 usd")), "entries[0].postings[0].amount"},
		{"AmountOneLetterCurrency", txBody(t, "postings", posting("Assets:Cash", "1 V")), "entries[0].postings[0].amount"},
		{"AmountTwoNumbers", txBody(t, "postings", posting("Assets:Cash", "1 2 USD")), "entries[0].postings[0].amount"},
		{"AmountDanglingAt", txBody(t, "postings", posting("Assets:Cash", "1 USD @")), "entries[0].postings[0].amount"},
		{"AmountUnclosedCost", txBody(t, "postings", posting("Assets:Cash", "1 HOOL {5 USD")), "entries[0].postings[0].amount"},
		{"AmountLabelEscape", txBody(t, "postings", posting("Assets:Cash", `1 HOOL {"a\"b"}`)), "entries[0].postings[0].amount"},
		{"AmountNumberNotString", txBody(t, "postings", []any{map[string]any{"account": "Assets:Cash", "amount": 5}}), "entries[0].postings[0].amount"},
		{"PostingMetaNumber", txBody(t, "postings", []any{map[string]any{"account": "Assets:Cash", "amount": "", "meta": map[string]any{"qty": 1.5}}}), "entries[0].postings[0].meta.qty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := parseAndValidate(tt.body, fava.Rules{})
			if tt.field == "" {
				if err != nil {
					t.Fatalf("rejected: %v\n%s", err, tt.body)
				}
				return
			}
			assertFieldError(t, err, tt.field)
		})
	}
}

func parseAndValidate(body []byte, r fava.Rules) error {
	a, err := fava.ParseAddEntries(body)
	if err != nil {
		return err
	}
	return a.Validate(r)
}

func assertFieldError(tb testing.TB, err error, field string) {
	tb.Helper()
	if err == nil {
		tb.Fatalf("accepted, want an error on %s", field)
	}
	var e *favaproxy.Error
	if !errors.As(err, &e) || e.Code != favaproxy.EInvalid {
		tb.Fatalf("error %v is not an EInvalid *Error", err)
	}
	if got, want := e.Field, field; got != want {
		tb.Fatalf("field=%q, want %q (%s)", got, want, e.Message)
	}
	if e.Message == "" {
		tb.Fatalf("error on %s has no message", field)
	}
}

func TestValidateOtherEntries(t *testing.T) {
	tests := []struct {
		name, body, field string
	}{
		{"Balance", `{"entries":[{"t":"Balance","date":"2024-01-01","account":"Assets:Bank","amount":{"number":"-1.50","currency":"USD"},"meta":{}}]}`, ""},
		{"BalanceNumberJSON", `{"entries":[{"t":"Balance","date":"2024-01-01","account":"Assets:Bank","amount":{"number":1.5,"currency":"USD"},"meta":{}}]}`, "entries[0].amount.number"},
		{"BalanceNaN", `{"entries":[{"t":"Balance","date":"2024-01-01","account":"Assets:Bank","amount":{"number":"NaN","currency":"USD"},"meta":{}}]}`, "entries[0].amount.number"},
		{"BalanceExponent", `{"entries":[{"t":"Balance","date":"2024-01-01","account":"Assets:Bank","amount":{"number":"1e5","currency":"USD"},"meta":{}}]}`, "entries[0].amount.number"},
		{"BalanceCurrency", `{"entries":[{"t":"Balance","date":"2024-01-01","account":"Assets:Bank","amount":{"number":"1","currency":"US D"},"meta":{}}]}`, "entries[0].amount.currency"},
		{"BalanceNoAmount", `{"entries":[{"t":"Balance","date":"2024-01-01","account":"Assets:Bank","meta":{}}]}`, "entries[0].amount"},
		{"BalanceAccountInjection", `{"entries":[{"t":"Balance","date":"2024-01-01","account":"Assets:Bank\n2024-01-01 open Assets:X","amount":{"number":"1","currency":"USD"},"meta":{}}]}`, "entries[0].account"},
		{"Note", `{"entries":[{"t":"Note","date":"2024-01-01","account":"Assets:Bank","comment":"said \"hi\" ✓","meta":{"by":"ann"}}]}`, ""},
		{"NoteNewline", `{"entries":[{"t":"Note","date":"2024-01-01","account":"Assets:Bank","comment":"a\n2024-01-01 open Assets:X","meta":{}}]}`, "entries[0].comment"},
		{"NoteBackslash", `{"entries":[{"t":"Note","date":"2024-01-01","account":"Assets:Bank","comment":"ends with \\","meta":{}}]}`, "entries[0].comment"},
		{"NoteNullComment", `{"entries":[{"t":"Note","date":"2024-01-01","account":"Assets:Bank","comment":null,"meta":{}}]}`, "entries[0].comment"},
		{"Open", `{"entries":[{"t":"Open","date":"2024-01-01","account":"Assets:Bank","meta":{}}]}`, "entries[0].t"},
		{"NoType", `{"entries":[{"date":"2024-01-01","meta":{}}]}`, "entries[0].t"},
		{"SecondEntryBad", `{"entries":[{"t":"Note","date":"2024-01-01","account":"Assets:Bank","comment":"ok","meta":{}},{"t":"Note","date":"2024-01-01","account":"Assets:bank","comment":"ok","meta":{}}]}`, "entries[1].account"},
		{"EntryNotObject", `{"entries":[1]}`, "entries[0]"},
		{"EntriesNotArray", `{"entries":{}}`, "entries"},
		{"EntriesNull", `{"entries":null}`, "entries"},
		{"NoEntries", `{"entry":[]}`, "entries"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := parseAndValidate([]byte(tt.body), fava.Rules{})
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			assertFieldError(t, err, tt.field)
		})
	}
}

func TestParseAddEntriesStrictJSON(t *testing.T) {
	for name, body := range map[string]string{
		"NotJSON":        `entries`,
		"Array":          `[{"entries":[]}]`,
		"TrailingData":   `{"entries":[]} {}`,
		"TrailingComma":  `{"entries":[],}`,
		"DuplicateKey":   `{"entries":[],"entries":[]}`,
		"DuplicateDeep":  `{"entries":[{"t":"Note","t":"Balance"}]}`,
		"InvalidUTF8":    "{\"entries\":[],\"x\":\"\xff\"}",
		"LoneSurrogate":  `{"entries":[],"x":"\ud800"}`,
		"LoneLowSurr":    `{"entries":[],"x":"a\udc00"}`,
		"SurrogateThenX": `{"entries":[],"x":"\ud800\u0041"}`,
		"Empty":          ``,
		"Null":           `null`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := fava.ParseAddEntries([]byte(body))
			if err == nil {
				t.Fatalf("accepted %q", body)
			}
			if got, want := favaproxy.ErrorCode(err), favaproxy.EInvalid; got != want {
				t.Fatalf("code=%q, want %q", got, want)
			}
		})
	}
	// A surrogate pair is fine.
	if _, err := fava.ParseAddEntries([]byte(`{"entries":[],"x":"\ud83d\ude00"}`)); err != nil {
		t.Fatalf("surrogate pair refused: %v", err)
	}
}

func TestValidateRoots(t *testing.T) {
	body := txBody(t, "postings", []any{map[string]any{"account": "Aktiva:Bank", "amount": "1 EUR"}})
	if err := parseAndValidate(body, fava.Rules{}); err == nil {
		t.Fatal("Aktiva accepted with the default roots")
	}
	r := fava.Rules{Roots: []string{"Aktiva", "Passiva", "Eigenkapital", "Ertrag", "Aufwand"}}
	if err := parseAndValidate(body, r); err != nil {
		t.Fatalf("Aktiva refused with German roots: %v", err)
	}
}

func TestAddLinkAndMeta(t *testing.T) {
	a, err := fava.ParseAddEntries(readExample(t))
	if err != nil {
		t.Fatal(err)
	}
	tx, err := fava.AddLink(a.Entries[0], "idem-k1")
	if err != nil {
		t.Fatal(err)
	}
	twice, err := fava.AddLink(tx, "idem-k1")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(twice), "idem-k1"); got != 1 {
		t.Errorf("link appears %d times after adding it twice: %s", got, twice)
	}
	if _, err := fava.AddLink(a.Entries[2], "idem-k1"); err == nil {
		t.Error("link added to a Balance")
	}
	if _, err := fava.AddLink(a.Entries[0], "bad link"); err == nil {
		t.Error("invalid link added")
	}
	note, err := fava.AddMeta(a.Entries[3], "idempotency-key", "idem-k1")
	if err != nil {
		t.Fatal(err)
	}
	bal, err := fava.AddMeta(a.Entries[2], "idempotency-key", "idem-k1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fava.AddMeta(a.Entries[2], "Bad", "v"); err == nil {
		t.Error("invalid metadata key added")
	}
	if _, err := fava.AddMeta(a.Entries[2], "idempotency-key", "a\nb"); err == nil {
		t.Error("metadata value with a newline added")
	}

	b2, err := fava.ParseAddEntries(fava.AddEntriesBody([]json.RawMessage{tx, a.Entries[1], bal, note}))
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Validate(fava.Rules{}); err != nil {
		t.Fatal(err)
	}
	got := b2.Typed[0]
	if want := []string{"inv-42", "ln-abc123", "idem-k1"}; strings.Join(got.Links, ",") != strings.Join(want, ",") {
		t.Errorf("links=%v, want %v", got.Links, want)
	}
	// Everything else is as before.
	orig := a.Typed[0]
	if got.Payee != orig.Payee || got.Narration != orig.Narration || len(got.Postings) != len(orig.Postings) ||
		got.Meta["receipt"] != orig.Meta["receipt"] || got.Postings[0].Meta["item"] != "bread" {
		t.Errorf("AddLink changed other fields: %+v", got)
	}
	if got, want := b2.Typed[2].Meta["idempotency-key"], any("idem-k1"); got != want {
		t.Errorf("balance meta=%v, want %v", got, want)
	}
	if got, want := b2.Typed[3].Meta["idempotency-key"], any("idem-k1"); got != want {
		t.Errorf("note meta=%v, want %v", got, want)
	}
	if !bytes.Contains(note, []byte(`"x-client-field":[1,2]`)) {
		t.Errorf("AddMeta lost a field: %s", note)
	}
}

func TestFingerprint(t *testing.T) {
	e1 := []json.RawMessage{json.RawMessage(`{"t":"Note","date":"2024-01-01","meta":{"a":"1","b":"2"}}`)}
	e2 := []json.RawMessage{json.RawMessage("{ \"meta\": {\"b\":\"2\", \"a\":\"1\"},\n \"date\":\"2024-01-01\", \"t\":\"Note\" }")}
	e3 := []json.RawMessage{json.RawMessage(`{"t":"Note","date":"2024-01-02","meta":{"a":"1","b":"2"}}`)}
	f := fava.Fingerprint("add_entries", "main", e1)
	if len(f) != 64 {
		t.Fatalf("fingerprint %q is not hex sha256", f)
	}
	if got := fava.Fingerprint("add_entries", "main", e2); got != f {
		t.Errorf("key order and whitespace change the fingerprint")
	}
	for name, other := range map[string]string{
		"OtherEntries": fava.Fingerprint("add_entries", "main", e3),
		"OtherLedger":  fava.Fingerprint("add_entries", "other", e1),
		"OtherRoute":   fava.Fingerprint("add_account", "main", e1),
		"TwoEntries":   fava.Fingerprint("add_entries", "main", append(e1, e1...)),
		"NoEntries":    fava.Fingerprint("add_entries", "main", nil),
	} {
		if other == f {
			t.Errorf("%s: same fingerprint", name)
		}
	}
	// The fingerprint of the entries without the injected link differs
	// from the one with it: callers must fingerprint first.
	a, err := fava.ParseAddEntries(readExample(t))
	if err != nil {
		t.Fatal(err)
	}
	linked, err := fava.AddLink(a.Entries[0], "idem-k")
	if err != nil {
		t.Fatal(err)
	}
	if fava.Fingerprint("r", "l", a.Entries[:1]) == fava.Fingerprint("r", "l", []json.RawMessage{linked}) {
		t.Error("the link does not change the fingerprint")
	}
}

func TestRulesValidate(t *testing.T) {
	good := []fava.Rules{{}, {Roots: fava.DefaultRoots}, {Roots: []string{"Aktiva", "Passiva", "Eigenkapital", "Ertrag", "Aufwand"}}, {Roots: []string{"Ä", "B", "C", "D", "E"}}}
	for _, r := range good {
		if err := r.Validate(); err != nil {
			t.Errorf("%v: %v", r.Roots, err)
		}
	}
	bad := []fava.Rules{{Roots: []string{"Assets"}}, {Roots: []string{"Assets", "Liabilities", "Equity", "Income", "assets"}},
		{Roots: []string{"Assets", "Assets", "Equity", "Income", "Expenses"}}, {Roots: []string{"Assets", "Liabilities", "Equity", "Income", "1Expenses"}},
		{Roots: []string{"Assets", "Liabilities", "Equity", "Income", "Ex:penses"}}}
	for _, r := range bad {
		if err := r.Validate(); err == nil {
			t.Errorf("%v accepted", r.Roots)
		}
	}
}
