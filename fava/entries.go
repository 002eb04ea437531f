package fava

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/checksum"
)

// Entry types add_entries takes (Fava's JSON key "t").
const (
	TypeTransaction = "Transaction"
	TypeBalance     = "Balance"
	TypeNote        = "Note"
)

// AddEntries is a parsed add_entries request body.
type AddEntries struct {
	// Entries are the entries exactly as the client sent them, to be
	// forwarded: fields favaproxy does not know survive untouched.
	Entries []json.RawMessage
	// Typed are the same entries, read.
	Typed []Entry
}

// Entry is the typed view of one entry of an add_entries request, with the
// fields Fava's deserialise reads (src/fava/serialisation.py, 1.27 to
// 1.30.16).
type Entry struct {
	Type      string // "t": Transaction, Balance or Note
	Date      string
	Meta      Meta
	Flag      string    // Transaction
	Payee     string    // Transaction; null and absent read as ""
	Narration string    // Transaction; null reads as ""
	Tags      []string  // Transaction
	Links     []string  // Transaction
	Postings  []Posting // Transaction
	Account   string    // Balance, Note
	Number    string    // Balance: amount.number
	Currency  string    // Balance: amount.currency
	Comment   string    // Note
}

// Posting is one posting of a Transaction.
type Posting struct {
	Account string
	// Amount is Fava's amount string, such as "12.5 USD" or
	// "-11 EUR @ 1.136363 USD"; "" leaves the amount to Beancount.
	Amount string
	Meta   Meta
}

// Meta is entry or posting metadata. Values are string, bool or nil: the
// only JSON values Beancount's printer writes back as metadata (a number
// makes it fail in the middle of a batch).
type Meta map[string]any

// Rules are the properties of a ledger that validation depends on.
type Rules struct {
	// Roots are the ledger's five root account names
	// (options name_assets …). Empty means DefaultRoots.
	Roots []string
}

// ParseAddEntries reads an add_entries body strictly: valid UTF-8, exactly
// one JSON object with an "entries" array of objects, no duplicate keys, no
// trailing data; each entry has a supported type "t", the fields Fava reads
// for that type, each of the JSON type Fava needs. Errors are EInvalid
// *favaproxy.Error values naming the field. Values are checked against
// Beancount's grammar by Validate.
func ParseAddEntries(body []byte) (*AddEntries, error) {
	if _, err := Canonical(body); err != nil {
		return nil, favaproxy.Errorf(favaproxy.EInvalid, "invalid JSON body: %v", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return nil, favaproxy.Errorf(favaproxy.EInvalid, "body must be a JSON object")
	}
	raw, ok := top["entries"]
	if !ok {
		return nil, favaproxy.FieldErrorf("entries", "is required")
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil || list == nil {
		return nil, favaproxy.FieldErrorf("entries", "must be an array")
	}
	a := &AddEntries{Entries: list, Typed: make([]Entry, len(list))}
	for i, e := range list {
		if err := decodeEntry(fmt.Sprintf("entries[%d]", i), e, &a.Typed[i]); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// fields reads a JSON object into its members, or fails naming path.
func fields(path string, raw json.RawMessage) (map[string]json.RawMessage, error) {
	var obj map[string]json.RawMessage
	if !isKind(raw, '{') || json.Unmarshal(raw, &obj) != nil {
		return nil, favaproxy.FieldErrorf(path, "must be an object")
	}
	return obj, nil
}

func isKind(raw json.RawMessage, first byte) bool {
	b := bytes.TrimLeft(raw, " \t\r\n")
	return len(b) > 0 && b[0] == first
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

// join returns the path of key inside the object at path; path "" is the
// top level.
func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// getString reads obj[key] as a string. Absent is an error if required;
// null is an error unless nullOK.
func getString(obj map[string]json.RawMessage, path, key string, required, nullOK bool, dst *string) error {
	raw, ok := obj[key]
	if !ok {
		if required {
			return favaproxy.FieldErrorf(join(path, key), "is required")
		}
		return nil
	}
	if isNull(raw) {
		if nullOK {
			return nil
		}
		return favaproxy.FieldErrorf(join(path, key), "must be a string, not null")
	}
	if !isKind(raw, '"') || json.Unmarshal(raw, dst) != nil {
		return favaproxy.FieldErrorf(join(path, key), "must be a string")
	}
	return nil
}

func getStrings(obj map[string]json.RawMessage, path, key string, dst *[]string) error {
	raw, ok := obj[key]
	if !ok {
		return favaproxy.FieldErrorf(join(path, key), "is required")
	}
	var items []json.RawMessage
	if !isKind(raw, '[') || json.Unmarshal(raw, &items) != nil {
		return favaproxy.FieldErrorf(join(path, key), "must be an array of strings")
	}
	out := make([]string, len(items))
	for i, it := range items {
		if !isKind(it, '"') || json.Unmarshal(it, &out[i]) != nil {
			return favaproxy.FieldErrorf(fmt.Sprintf("%s[%d]", join(path, key), i), "must be a string")
		}
	}
	*dst = out
	return nil
}

func getMeta(obj map[string]json.RawMessage, path string, required bool, dst *Meta) error {
	mpath := join(path, "meta")
	raw, ok := obj["meta"]
	if !ok || (!required && isNull(raw)) {
		if required {
			return favaproxy.FieldErrorf(mpath, "is required (an object, may be empty)")
		}
		return nil
	}
	m, err := fields(mpath, raw)
	if err != nil {
		return err
	}
	out := make(Meta, len(m))
	for k, v := range m {
		switch {
		case isNull(v):
			out[k] = nil
		case isKind(v, '"'):
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return favaproxy.FieldErrorf(mpath+"."+k, "must be a string")
			}
			out[k] = s
		case string(bytes.TrimSpace(v)) == "true":
			out[k] = true
		case string(bytes.TrimSpace(v)) == "false":
			out[k] = false
		default:
			return favaproxy.FieldErrorf(mpath+"."+k, "must be a string, true, false or null")
		}
	}
	*dst = out
	return nil
}

func decodeEntry(path string, raw json.RawMessage, e *Entry) error {
	obj, err := fields(path, raw)
	if err != nil {
		return err
	}
	if err := getString(obj, path, "t", true, false, &e.Type); err != nil {
		return err
	}
	if err := getString(obj, path, "date", true, false, &e.Date); err != nil {
		return err
	}
	if err := getMeta(obj, path, true, &e.Meta); err != nil {
		return err
	}
	switch e.Type {
	case TypeTransaction:
		for _, f := range []struct {
			key            string
			required, null bool
			dst            *string
		}{
			{"flag", true, false, &e.Flag},
			{"payee", false, true, &e.Payee},
			{"narration", true, true, &e.Narration},
		} {
			if err := getString(obj, path, f.key, f.required, f.null, f.dst); err != nil {
				return err
			}
		}
		if err := getStrings(obj, path, "tags", &e.Tags); err != nil {
			return err
		}
		if err := getStrings(obj, path, "links", &e.Links); err != nil {
			return err
		}
		rawPostings, ok := obj["postings"]
		if !ok {
			return favaproxy.FieldErrorf(path+".postings", "is required")
		}
		var ps []json.RawMessage
		if !isKind(rawPostings, '[') || json.Unmarshal(rawPostings, &ps) != nil {
			return favaproxy.FieldErrorf(path+".postings", "must be an array")
		}
		e.Postings = make([]Posting, len(ps))
		for j, p := range ps {
			ppath := fmt.Sprintf("%s.postings[%d]", path, j)
			pobj, err := fields(ppath, p)
			if err != nil {
				return err
			}
			if err := getString(pobj, ppath, "account", true, false, &e.Postings[j].Account); err != nil {
				return err
			}
			if err := getString(pobj, ppath, "amount", false, false, &e.Postings[j].Amount); err != nil {
				return err
			}
			if err := getMeta(pobj, ppath, false, &e.Postings[j].Meta); err != nil {
				return err
			}
		}
	case TypeBalance:
		if err := getString(obj, path, "account", true, false, &e.Account); err != nil {
			return err
		}
		rawAmount, ok := obj["amount"]
		if !ok {
			return favaproxy.FieldErrorf(path+".amount", "is required")
		}
		amt, err := fields(path+".amount", rawAmount)
		if err != nil {
			return err
		}
		if err := getString(amt, path+".amount", "number", true, false, &e.Number); err != nil {
			return err
		}
		if err := getString(amt, path+".amount", "currency", true, false, &e.Currency); err != nil {
			return err
		}
	case TypeNote:
		if err := getString(obj, path, "account", true, false, &e.Account); err != nil {
			return err
		}
		if err := getString(obj, path, "comment", true, false, &e.Comment); err != nil {
			return err
		}
	default:
		return favaproxy.FieldErrorf(path+".t", "unsupported entry type %s (Transaction, Balance or Note)", quoteShort(e.Type))
	}
	return nil
}

// Validate checks the entries of a parsed request against Beancount's
// grammar and the ledger's rules. See Validate.
func (a *AddEntries) Validate(r Rules) error { return Validate(a.Typed, r) }

// Validate checks entries against Beancount's grammar: dates, flags,
// accounts with the ledger's roots, currencies, numbers, posting amounts,
// tags, links and metadata keys; and that no string holds a control
// character. Fava prints accounts, tags, links and metadata keys into the
// ledger as given, so a newline in any of them would inject directives;
// control characters in strings are refused for the same reason. The first
// problem is returned as an EInvalid *favaproxy.Error naming the field.
func Validate(entries []Entry, r Rules) error {
	for i, e := range entries {
		if err := validateEntry(fmt.Sprintf("entries[%d]", i), &e, r); err != nil {
			return err
		}
	}
	return nil
}

func fieldErr(field, why string) error {
	if why == "" {
		return nil
	}
	return favaproxy.FieldErrorf(field, "%s", why)
}

func validateEntry(path string, e *Entry, r Rules) error {
	if err := fieldErr(path+".date", CheckDate(e.Date)); err != nil {
		return err
	}
	if err := validateMeta(path+".meta", e.Meta); err != nil {
		return err
	}
	switch e.Type {
	case TypeTransaction:
		if len(e.Flag) != 1 || !strings.Contains(Flags, e.Flag) {
			return favaproxy.FieldErrorf(path+".flag", "flag %s must be one of %s", quoteShort(e.Flag), Flags)
		}
		if err := fieldErr(path+".payee", CheckText(e.Payee)); err != nil {
			return err
		}
		if err := fieldErr(path+".narration", CheckText(e.Narration)); err != nil {
			return err
		}
		for j, t := range e.Tags {
			if err := fieldErr(fmt.Sprintf("%s.tags[%d]", path, j), CheckLink(t)); err != nil {
				return err
			}
		}
		for j, l := range e.Links {
			if err := fieldErr(fmt.Sprintf("%s.links[%d]", path, j), CheckLink(l)); err != nil {
				return err
			}
		}
		for j, p := range e.Postings {
			ppath := fmt.Sprintf("%s.postings[%d]", path, j)
			if err := fieldErr(ppath+".account", CheckAccount(p.Account, r.Roots)); err != nil {
				return err
			}
			if err := fieldErr(ppath+".amount", CheckPostingAmount(p.Amount)); err != nil {
				return err
			}
			if err := validateMeta(ppath+".meta", p.Meta); err != nil {
				return err
			}
		}
	case TypeBalance:
		if err := fieldErr(path+".account", CheckAccount(e.Account, r.Roots)); err != nil {
			return err
		}
		if err := fieldErr(path+".amount.number", CheckNumber(e.Number)); err != nil {
			return err
		}
		if err := fieldErr(path+".amount.currency", CheckCurrency(e.Currency)); err != nil {
			return err
		}
	case TypeNote:
		if err := fieldErr(path+".account", CheckAccount(e.Account, r.Roots)); err != nil {
			return err
		}
		if err := fieldErr(path+".comment", CheckText(e.Comment)); err != nil {
			return err
		}
		// Fava drops '"' from a note's comment and Beancount prints it
		// between quotes without escaping: a backslash would escape the
		// closing quote and the string would run on into the next entries.
		if i := strings.IndexByte(e.Comment, '\\'); i >= 0 {
			return favaproxy.FieldErrorf(path+".comment", "backslash at byte %d is not allowed in a note (Fava does not escape it)", i+1)
		}
	default:
		return favaproxy.FieldErrorf(path+".t", "unsupported entry type %s (Transaction, Balance or Note)", quoteShort(e.Type))
	}
	return nil
}

func validateMeta(path string, m Meta) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if why := CheckMetaKey(k); why != "" {
			return favaproxy.FieldErrorf(path, "%s", why)
		}
		switch v := m[k].(type) {
		case string:
			if err := fieldErr(path+"."+k, CheckText(v)); err != nil {
				return err
			}
		case bool, nil:
		default:
			return favaproxy.FieldErrorf(path+"."+k, "must be a string, true, false or null")
		}
	}
	return nil
}

// AddLink returns entry, a Transaction, with link added to its "links"
// (once: a link already there is not repeated). Every other field is kept
// as sent.
func AddLink(entry json.RawMessage, link string) (json.RawMessage, error) {
	if why := CheckLink(link); why != "" {
		return nil, fmt.Errorf("add link: %s", why)
	}
	obj, err := fields("entry", entry)
	if err != nil {
		return nil, fmt.Errorf("add link: %w", err)
	}
	var t string
	if err := json.Unmarshal(obj["t"], &t); err != nil || t != TypeTransaction {
		return nil, fmt.Errorf("add link: entry is not a Transaction")
	}
	var links []string
	if raw, ok := obj["links"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &links); err != nil {
			return nil, fmt.Errorf("add link: links is not an array of strings")
		}
	}
	if !slices.Contains(links, link) {
		links = append(links, link)
	}
	obj["links"] = mustJSON(links)
	return mustJSON(obj), nil
}

// AddMeta returns entry with metadata key set to value (replacing a value
// the client gave the same key). Every other field is kept as sent. It is
// how Balance and Note entries, which cannot carry links, are marked.
func AddMeta(entry json.RawMessage, key, value string) (json.RawMessage, error) {
	if why := CheckMetaKey(key); why != "" {
		return nil, fmt.Errorf("add metadata: %s", why)
	}
	if why := CheckText(value); why != "" {
		return nil, fmt.Errorf("add metadata: %s", why)
	}
	obj, err := fields("entry", entry)
	if err != nil {
		return nil, fmt.Errorf("add metadata: %w", err)
	}
	meta := map[string]json.RawMessage{}
	if raw, ok := obj["meta"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &meta); err != nil || meta == nil {
			return nil, fmt.Errorf("add metadata: meta is not an object")
		}
	}
	meta[key] = mustJSON(value)
	obj["meta"] = mustJSON(meta)
	return mustJSON(obj), nil
}

// mustJSON encodes values that always encode (strings, string slices, maps
// of valid raw messages).
func mustJSON(v any) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(fmt.Sprintf("fava: encode: %v", err))
	}
	return bytes.TrimRight(buf.Bytes(), "\n")
}

// Fingerprint identifies a write request for the idempotency check: the
// hex sha256 of the canonical JSON of route, ledger and entries (keys
// sorted, no insignificant whitespace). Compute it on the entries as the
// client sent them, before a link or metadata is added.
func Fingerprint(route, ledger string, entries []json.RawMessage) string {
	var buf bytes.Buffer
	buf.WriteString(`{"entries":[`)
	for i, e := range entries {
		if i > 0 {
			buf.WriteByte(',')
		}
		c, err := Canonical(e)
		if err != nil {
			// Not valid JSON: fingerprint the bytes themselves, as a
			// string, so the result stays well defined.
			c = mustJSON(string(e))
		}
		buf.Write(c)
	}
	buf.WriteString(`],"ledger":`)
	buf.Write(mustJSON(ledger))
	buf.WriteString(`,"route":`)
	buf.Write(mustJSON(route))
	buf.WriteByte('}')
	return checksum.Bytes(buf.Bytes())
}

// AddEntriesBody returns the add_entries request body for entries.
func AddEntriesBody(entries []json.RawMessage) []byte {
	var buf bytes.Buffer
	buf.WriteString(`{"entries":[`)
	for i, e := range entries {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(bytes.TrimSpace(e))
	}
	buf.WriteString("]}")
	return buf.Bytes()
}
