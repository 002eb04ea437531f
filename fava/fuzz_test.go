package fava_test

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/fava"
)

func FuzzValidateAddEntries(f *testing.F) {
	f.Add(readExample(f))
	for _, s := range []string{
		`{"entries":[]}`,
		`{"entries":[{"t":"Balance","date":"2024-01-01","account":"Assets:Bank","amount":{"number":"1","currency":"USD"},"meta":{}}]}`,
		`{"entries":[{"t":"Note","date":"2024-01-01","account":"Assets:Bank","comment":"x\\","meta":{}}]}`,
		`{"entries":[{"t":"Note","date":"2024-01-01","account":"Assets:Bank\n2024-01-01 open Assets:X","comment":"x","meta":{}}]}`,
		`{"entries":[{"t":"Transaction","date":"2024-01-01","flag":"*","narration":"a\u2028b","tags":[],"links":[],"meta":{},"postings":[]}]}`,
		`{"entries":[{"t":"Transaction","date":"2024-01-01","flag":"*","narration":"n","tags":["a"],"links":["b"],"meta":{"k1":"v","ok":true,"no":null},"postings":[{"account":"Assets:Café","amount":"(1+2)*3 USD {4 # 5 EUR, 2024-01-01, \"l\"} @@ 6 GBP","meta":{"mm":"x"}}]}]}`,
		`{"entries":[{"t":"Transaction","date":"2024-01-01","flag":"*","narration":"n","tags":[],"links":[],"meta":{"k":"\ud800"},"postings":[]}]}`,
	} {
		f.Add([]byte(s))
	}
	for _, field := range []string{"payee", "narration"} {
		f.Add(txBody(f, field, "x\n2024-01-01 open Assets:Evil"))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := fava.ParseAddEntries(body)
		if err != nil {
			checkInvalid(t, err)
			return
		}
		if err := a.Validate(fava.Rules{}); err != nil {
			checkInvalid(t, err)
			return
		}
		checkAccepted(t, a)
		// Marking the entries keeps them valid, and the body built from
		// them reads back the same.
		marked := make([]json.RawMessage, len(a.Entries))
		for i, e := range a.Typed {
			var err error
			if e.Type == fava.TypeTransaction {
				marked[i], err = fava.AddLink(a.Entries[i], "idem-key")
			} else {
				marked[i], err = fava.AddMeta(a.Entries[i], "idempotency-key", "idem-key")
			}
			if err != nil {
				t.Fatalf("mark entries[%d]: %v", i, err)
			}
		}
		b, err := fava.ParseAddEntries(fava.AddEntriesBody(marked))
		if err != nil {
			t.Fatalf("marked body does not parse: %v", err)
		}
		if err := b.Validate(fava.Rules{}); err != nil {
			t.Fatalf("marked body is invalid: %v", err)
		}
		if fava.Fingerprint("add_entries", "l", a.Entries) != fava.Fingerprint("add_entries", "l", mustParse(t, fava.AddEntriesBody(a.Entries)).Entries) {
			t.Fatal("fingerprint changes through AddEntriesBody")
		}
	})
}

func mustParse(tb testing.TB, body []byte) *fava.AddEntries {
	tb.Helper()
	a, err := fava.ParseAddEntries(body)
	if err != nil {
		tb.Fatalf("parse %s: %v", body, err)
	}
	return a
}

func checkInvalid(tb testing.TB, err error) {
	tb.Helper()
	if got, want := favaproxy.ErrorCode(err), favaproxy.EInvalid; got != want {
		tb.Fatalf("error %v has code %q, want %q", err, got, want)
	}
	if favaproxy.ErrorMessage(err) == "" {
		tb.Fatalf("error %v has no message", err)
	}
}

// checkAccepted checks what must hold of entries that passed validation:
// no string holds a control character or a line separator, each entry
// renders as the lines it should, without CR or NUL, and no note comment
// holds a backslash.
func checkAccepted(tb testing.TB, a *fava.AddEntries) {
	tb.Helper()
	for i, e := range a.Typed {
		for _, s := range entryStrings(e) {
			for _, r := range s {
				if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
					tb.Fatalf("entries[%d]: accepted string %q holds %U", i, s, r)
				}
			}
		}
		out := renderFava(e)
		if got, want := strings.Count(out, "\n"), renderedLines(e); got != want {
			tb.Fatalf("entries[%d] renders as %d lines, want %d:\n%s", i, got, want, out)
		}
		if strings.ContainsAny(out, "\r\x00") {
			tb.Fatalf("entries[%d] renders with CR or NUL: %q", i, out)
		}
		if e.Type == fava.TypeNote && strings.Contains(e.Comment, `\`) {
			tb.Fatalf("note comment with a backslash accepted: %q", e.Comment)
		}
	}
}

// entryStrings returns every string of e that Fava prints.
func entryStrings(e fava.Entry) []string {
	out := []string{e.Date, e.Flag, e.Payee, e.Narration, e.Account, e.Number, e.Currency, e.Comment}
	out = append(out, e.Tags...)
	out = append(out, e.Links...)
	addMeta := func(m fava.Meta) {
		for k, v := range m {
			out = append(out, k)
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
	}
	addMeta(e.Meta)
	for _, p := range e.Postings {
		out = append(out, p.Account, p.Amount)
		addMeta(p.Meta)
	}
	return out
}

func FuzzAddAccount(f *testing.F) {
	for _, s := range []string{
		`{"account":"Assets:Bank"}`,
		`{"account":"Assets:Bank:Checking","date":"2024-01-01","currencies":["USD","EUR"],"booking":"FIFO","meta":{"iban":"x","ok":true,"no":null}}`,
		`{"account":"Assets:Bank\n2024-01-01 open Assets:X"}`,
		`{"account":"Assets:Bank","meta":{"k1":"a\"b\\c"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := fava.ParseAddAccount(body)
		if err == nil {
			err = a.Validate(fava.Rules{})
		}
		if err != nil {
			checkInvalid(t, err)
			return
		}
		out := fava.RenderOpen(a, "2024-01-01")
		if got, want := strings.Count(out, "\n"), 1+len(a.Meta); got != want {
			t.Fatalf("open renders as %d lines, want %d:\n%s", got, want, out)
		}
		for _, r := range out {
			if r != '\n' && (unicode.IsControl(r) || r == '\u2028' || r == '\u2029') {
				t.Fatalf("open directive holds %U: %q", r, out)
			}
		}
	})
}

// FuzzValidateEntryFields puts one fuzzed string into one field of a valid
// batch, so that the fuzzer explores the field grammars rather than JSON
// syntax, and checks accepted entries as FuzzValidateAddEntries does.
func FuzzValidateEntryFields(f *testing.F) {
	for _, s := range []string{"x", "Assets:Cash", "a\nb", "10 USD {1 EUR, 2024-01-01} @ 2 GBP", "k-1", "é", `a\`, "2024-02-29", "USD", "1,000.5"} {
		for field := range uint8(12) {
			f.Add(field, s)
		}
	}
	f.Fuzz(func(t *testing.T, field uint8, s string) {
		tx := map[string]any{"t": "Transaction", "date": "2024-01-02", "flag": "*", "payee": "P", "narration": "N",
			"tags": []string{"t1"}, "links": []string{"l1"}, "meta": map[string]any{"note": "x"},
			"postings": []any{map[string]any{"account": "Expenses:Food", "amount": "10 USD", "meta": map[string]any{"pm": "v"}}, map[string]any{"account": "Assets:Cash"}}}
		note := map[string]any{"t": "Note", "date": "2024-01-02", "account": "Assets:Cash", "comment": "c", "meta": map[string]any{}}
		bal := map[string]any{"t": "Balance", "date": "2024-01-02", "account": "Assets:Cash", "amount": map[string]any{"number": "1", "currency": "USD"}, "meta": map[string]any{}}
		p0 := tx["postings"].([]any)[0].(map[string]any)
		switch field % 12 {
		case 0:
			tx["payee"] = s
		case 1:
			tx["narration"] = s
		case 2:
			tx["tags"] = []string{s}
		case 3:
			tx["links"] = []string{s}
		case 4:
			tx["meta"] = map[string]any{s: "v"}
		case 5:
			tx["meta"] = map[string]any{"note": s}
		case 6:
			p0["account"] = s
		case 7:
			p0["amount"] = s
		case 8:
			p0["meta"] = map[string]any{"pm": s}
		case 9:
			note["comment"] = s
		case 10:
			bal["amount"] = map[string]any{"number": s, "currency": "USD"}
		case 11:
			tx["date"] = s
		}
		body, err := json.Marshal(map[string]any{"entries": []any{tx, note, bal}})
		if err != nil {
			t.Skip()
		}
		a, err := fava.ParseAddEntries(body)
		if err == nil {
			err = a.Validate(fava.Rules{})
		}
		if err != nil {
			checkInvalid(t, err)
			return
		}
		checkAccepted(t, a)
	})
}
