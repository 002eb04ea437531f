package favaproxy

import "strings"

// MaxKeyLen is the longest idempotency key accepted, in bytes, not counting
// the configured prefix.
const MaxKeyLen = 128

// ParseIdempotencyKey reads the value of an Idempotency-Key header and returns
// the Beancount link it stands for: prefix followed by the key, without the
// leading "^".
//
// The value may be a Structured Field string, as the IETF draft
// "The Idempotency-Key HTTP Header Field" specifies ("abc", with the escapes
// \" and \\), or the bare key (abc). Optional whitespace around it is ignored.
// The key must not be empty, must be at most MaxKeyLen bytes, and prefix+key
// must be a valid Beancount link: only the characters A-Z a-z 0-9 - _ / . are
// allowed. Anything else is an EInvalid *Error saying why.
func ParseIdempotencyKey(header, prefix string) (string, error) {
	v := strings.Trim(header, " \t")
	if v == "" {
		return "", Errorf(EInvalid, "idempotency key is empty")
	}
	key := v
	if v[0] == '"' {
		var err error
		if key, err = unquoteSFString(v); err != nil {
			return "", err
		}
	}
	if key == "" {
		return "", Errorf(EInvalid, "idempotency key is empty")
	}
	if len(key) > MaxKeyLen {
		return "", Errorf(EInvalid, "idempotency key is too long: %d bytes, at most %d", len(key), MaxKeyLen)
	}
	for i := 0; i < len(prefix); i++ {
		if !IsLinkChar(prefix[i]) {
			return "", Errorf(EInvalid, "idempotency key prefix %q has a character not allowed in a Beancount link at position %d", prefix, i+1)
		}
	}
	for i := 0; i < len(key); i++ {
		if !IsLinkChar(key[i]) {
			return "", Errorf(EInvalid, "idempotency key has a character not allowed in a Beancount link at position %d (%s); allowed are A-Z a-z 0-9 - _ / .", i+1, quoteByte(key[i]))
		}
	}
	return prefix + key, nil
}

// unquoteSFString decodes an RFC 8941 sf-string: DQUOTE *chr DQUOTE where chr
// is printable ASCII other than DQUOTE and backslash, or one of the escapes
// \" and \\. Nothing may follow the closing quote (parameters are refused).
func unquoteSFString(v string) (string, error) {
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\':
			if i+1 >= len(v) {
				return "", Errorf(EInvalid, "idempotency key: unterminated quoted string")
			}
			i++
			if v[i] != '"' && v[i] != '\\' {
				return "", Errorf(EInvalid, "idempotency key: invalid escape %s at position %d; only \\\" and \\\\ are allowed", quoteByte(v[i]), i+1)
			}
			b.WriteByte(v[i])
		case c == '"':
			if rest := v[i+1:]; rest != "" {
				return "", Errorf(EInvalid, "idempotency key: unexpected data after the closing quote at position %d", i+2)
			}
			return b.String(), nil
		case c < 0x20 || c > 0x7e:
			return "", Errorf(EInvalid, "idempotency key: character %s not allowed in a quoted string at position %d", quoteByte(c), i+1)
		default:
			b.WriteByte(c)
		}
	}
	return "", Errorf(EInvalid, "idempotency key: unterminated quoted string")
}

// IsLinkChar reports whether c may appear in a Beancount link or tag
// (the lexer's [A-Za-z0-9\-_/.]).
func IsLinkChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return c == '-' || c == '_' || c == '/' || c == '.'
}

// IsLink reports whether s is a valid Beancount link or tag name
// (without the leading ^ or #).
func IsLink(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !IsLinkChar(s[i]) {
			return false
		}
	}
	return true
}

func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return "'" + string(rune(c)) + "'"
	}
	const hex = "0123456789ABCDEF"
	return "byte 0x" + string([]byte{hex[c>>4], hex[c&15]})
}
