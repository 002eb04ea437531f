package fava

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"unicode/utf8"
)

// Canonical returns the canonical form of one JSON value: object keys
// sorted, no insignificant whitespace, strings re-encoded the same way
// (no HTML escaping), numbers as written. Two values that decode equal
// (other than numbers written differently) have the same canonical form.
// Duplicate object keys, invalid UTF-8, lone UTF-16 surrogate escapes,
// nesting deeper than MaxDepth and trailing data are errors.
func Canonical(raw []byte) ([]byte, error) {
	if err := CheckDepth(raw, MaxDepth); err != nil {
		return nil, err
	}
	if err := checkJSONText(raw); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var buf bytes.Buffer
	if err := canonical(dec, &buf, ""); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("unexpected data after the JSON value")
	}
	return buf.Bytes(), nil
}

func canonical(dec *json.Decoder, buf *bytes.Buffer, path string) error {
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '{':
			type member struct {
				key string
				val []byte
			}
			var members []member
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return err
				}
				key := kt.(string)
				if seen[key] {
					return fmt.Errorf("%s: duplicate key %q", pathOrRoot(path), key)
				}
				seen[key] = true
				var vb bytes.Buffer
				if err := canonical(dec, &vb, path+"."+key); err != nil {
					return err
				}
				members = append(members, member{key, vb.Bytes()})
			}
			if _, err := dec.Token(); err != nil {
				return err
			}
			sort.Slice(members, func(i, j int) bool { return members[i].key < members[j].key })
			buf.WriteByte('{')
			for i, m := range members {
				if i > 0 {
					buf.WriteByte(',')
				}
				writeString(buf, m.key)
				buf.WriteByte(':')
				buf.Write(m.val)
			}
			buf.WriteByte('}')
		case '[':
			buf.WriteByte('[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					buf.WriteByte(',')
				}
				if err := canonical(dec, buf, fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return err
			}
			buf.WriteByte(']')
		}
	case string:
		writeString(buf, v)
	case json.Number:
		buf.WriteString(v.String())
	case bool:
		if v {
			buf.WriteString("true")
		} else {
			buf.WriteString("false")
		}
	case nil:
		buf.WriteString("null")
	}
	return nil
}

func pathOrRoot(p string) string {
	if p == "" {
		return "body"
	}
	return p[1:]
}

func writeString(buf *bytes.Buffer, s string) {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	buf.Truncate(buf.Len() - 1)
}

// checkJSONText refuses what Go's decoder would silently repair but Python's
// json module keeps: invalid UTF-8 (Go substitutes U+FFFD) and \u escapes of
// lone UTF-16 surrogates (Python keeps them; Fava's insert_entry opens the
// file with "w" before encoding, so by reading its source it would fail
// after truncating the file — not measured).
func checkJSONText(raw []byte) error {
	if !utf8.Valid(raw) {
		return errors.New("body is not valid UTF-8")
	}
	inString := false
	pendingHigh := false // the previous escape was a high surrogate
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if !inString {
			if c == '"' {
				inString = true
			}
			continue
		}
		switch c {
		case '"':
			if pendingHigh {
				return fmt.Errorf("lone UTF-16 surrogate escape before byte %d", i+1)
			}
			inString = false
		case '\\':
			if i+1 >= len(raw) {
				return nil // the decoder reports the syntax error
			}
			if raw[i+1] != 'u' {
				if pendingHigh {
					return fmt.Errorf("lone UTF-16 surrogate escape before byte %d", i+1)
				}
				i++
				continue
			}
			if i+6 > len(raw) {
				return nil
			}
			var u rune
			for _, h := range raw[i+2 : i+6] {
				u <<= 4
				switch {
				case '0' <= h && h <= '9':
					u |= rune(h - '0')
				case 'a' <= h && h <= 'f':
					u |= rune(h-'a') + 10
				case 'A' <= h && h <= 'F':
					u |= rune(h-'A') + 10
				default:
					return nil
				}
			}
			switch {
			case u >= 0xD800 && u < 0xDC00:
				if pendingHigh {
					return fmt.Errorf("lone UTF-16 surrogate escape at byte %d", i+1)
				}
				pendingHigh = true
			case u >= 0xDC00 && u < 0xE000:
				if !pendingHigh {
					return fmt.Errorf("lone UTF-16 surrogate escape at byte %d", i+1)
				}
				pendingHigh = false
			default:
				if pendingHigh {
					return fmt.Errorf("lone UTF-16 surrogate escape at byte %d", i+1)
				}
			}
			i += 5
		default:
			if pendingHigh {
				return fmt.Errorf("lone UTF-16 surrogate escape at byte %d", i+1)
			}
		}
	}
	return nil
}

// MaxDepth is the deepest nesting of arrays and objects favaproxy reads in
// a request body. Fava's add_entries needs six levels (the body, its
// entries, an entry, its postings, a posting, its metadata); anything
// deeper than this is refused before any parsing, so that no pass over a
// body costs more than a constant times its size.
const MaxDepth = 32

// CheckDepth reports an error when raw nests arrays and objects deeper
// than max. It reads raw once, byte by byte, allocating nothing; it does
// not otherwise check that raw is JSON.
func CheckDepth(raw []byte, max int) error {
	depth := 0
	for i := 0; i < len(raw); i++ {
		switch raw[i] {
		case '"':
			// Skip the string, escapes included.
			for i++; i < len(raw) && raw[i] != '"'; i++ {
				if raw[i] == '\\' {
					i++
				}
			}
		case '[', '{':
			depth++
			if depth > max {
				return fmt.Errorf("nested deeper than %d levels", max)
			}
		case ']', '}':
			depth--
		}
	}
	return nil
}
