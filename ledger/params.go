package ledger

import (
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/fava"
)

// params are a request's parameters as Fava's API reads them: the members
// of the JSON body of a PUT (exact names, as Python's dict has them), the
// query string otherwise. favaproxy checks exactly what Fava will use: a
// body with a repeated member, or a query string Go and werkzeug would read
// differently (a ";", a bad "%" escape), is refused instead.
type params struct {
	body  map[string]json.RawMessage // for PUT
	query url.Values                 // otherwise
}

// readParams reads req's parameters as Fava's API will.
func readParams(req *Request) (params, error) {
	if req.Method != http.MethodPut {
		q, err := strictQuery(req.URL.RawQuery)
		return params{query: q}, err
	}
	if _, err := fava.Canonical(req.Body); err != nil {
		return params{}, favaproxy.FieldErrorf("body", "not a JSON object Fava reads the same way: %v", err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(req.Body, &m); err != nil || m == nil {
		return params{}, favaproxy.FieldErrorf("body", "must be a JSON object")
	}
	return params{body: m}, nil
}

// strictQuery parses a query string, refusing one that Go's parser would
// read differently from werkzeug's: it drops pairs with ";" or a bad "%"
// escape that werkzeug keeps.
func strictQuery(raw string) (url.Values, error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return nil, favaproxy.FieldErrorf("query", "not a query string Fava reads the same way: %v", err)
	}
	return q, nil
}

// str returns parameter name: its string value and true, or false when it
// is absent. A parameter repeated in the query, not a string in the body,
// or holding a NUL byte is an error.
func (p params) str(name string) (string, bool, error) {
	if p.body != nil {
		raw, ok := p.body[name]
		if !ok {
			return "", false, nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", false, favaproxy.FieldErrorf(name, "must be a string")
		}
		return s, true, noNUL(name, s)
	}
	switch vs := p.query[name]; len(vs) {
	case 0:
		return "", false, nil
	case 1:
		return vs[0], true, noNUL(name, vs[0])
	default:
		return "", false, favaproxy.FieldErrorf(name, "repeated")
	}
}

func noNUL(name, s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return favaproxy.FieldErrorf(name, "holds a NUL byte")
		}
	}
	return nil
}
