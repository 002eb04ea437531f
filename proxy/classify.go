package proxy

import (
	"strings"

	"github.com/favaproxy/favaproxy"
)

// classifier decides which ledger a request touches and what kind of request
// it is. It sees the request's percent-decoded path (http.Request.URL.Path,
// decoded once, as werkzeug decodes PATH_INFO) and judges it after cleanPath,
// so encodings (/%61pi/), repeated slashes and dot segments never move a
// request out of its ledger. Writes are forwarded with the cleaned path, so
// Fava routes exactly the path that was classified.
type classifier struct {
	// prefix is the upstream's path prefix (fava --prefix), "" or "/p" with
	// no trailing slash. Paths that start with it are judged without it;
	// paths that do not are judged as they are. Either way the request is
	// forwarded to upstream prefix + the rest.
	prefix string
	// slugs holds every configured ledger's slug.
	slugs map[string]bool
}

// safeMethod reports whether Fava never changes a file for method (apart from
// the mutating GETs listed in apiKinds). Methods that are not upper-case
// are refused before they are classified (upperMethod), as Fava's server
// refuses them.
func safeMethod(method string) bool {
	return method == "GET" || method == "HEAD" || method == "OPTIONS"
}

// apiKinds maps "METHOD name" of /<slug>/api/<name> to its kind. Every
// mutating request not listed here is KindWrite, and every safe-method
// request not listed here is KindRead.
var apiKinds = map[string]favaproxy.Kind{
	"PUT add_entries":        favaproxy.KindAddEntries,
	"PUT add_account":        favaproxy.KindAddAccount,
	"PUT source":             favaproxy.KindSource,
	"PUT source_slice":       favaproxy.KindSlice,
	"DELETE source_slice":    favaproxy.KindSlice,
	"PUT attach_document":    favaproxy.KindDocument,
	"PUT add_document":       favaproxy.KindDocument,
	"PUT move":               favaproxy.KindDocument, // Fava ≥ 1.30.8
	"GET move":               favaproxy.KindDocument, // Fava ≤ 1.30.7: a mutating GET
	"HEAD move":              favaproxy.KindDocument, // Flask runs GET views for HEAD
	"DELETE document":        favaproxy.KindDocument,
	"PUT upload_import_file": favaproxy.KindImport,
}

// route returns the slug of the ledger a request is under ("" for none)
// and its kind. Every method other than GET, HEAD and OPTIONS is a write,
// wherever it goes: under an unknown slug it comes back as ("", KindWrite)
// and is refused, because Fava has no writable route outside its ledgers.
func (c *classifier) route(method, path string) (slug string, kind favaproxy.Kind) {
	p := c.strip(cleanPath(path))
	first, rest, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	safe := safeMethod(method)
	if !c.slugs[first] {
		if safe {
			return "", favaproxy.KindStatic
		}
		return "", favaproxy.KindWrite
	}
	if name, ok := strings.CutPrefix(rest, "api/"); ok {
		if k, ok := apiKinds[method+" "+name]; ok {
			return first, k
		}
	}
	if safe {
		return first, favaproxy.KindRead
	}
	return first, favaproxy.KindWrite
}

// strip removes the upstream prefix from a cleaned path, if it is there.
func (c *classifier) strip(p string) string {
	if c.prefix == "" {
		return p
	}
	if p == c.prefix {
		return "/"
	}
	if rest, ok := strings.CutPrefix(p, c.prefix); ok && strings.HasPrefix(rest, "/") {
		return rest
	}
	return p
}

// cleanPath returns p rooted at "/", with empty segments ("//") merged and
// "." and ".." segments resolved, keeping a trailing slash. Unlike
// path.Clean it keeps "/a/b/" distinct from "/a/b", because Fava does.
func cleanPath(p string) string {
	if !needsClean(p) {
		return p
	}
	segs := strings.Split(p, "/")
	out := make([]string, 0, len(segs))
	trailing := false
	for _, s := range segs {
		trailing = false
		switch s {
		case "":
			trailing = true
		case ".":
			trailing = true
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
			trailing = true
		default:
			out = append(out, s)
		}
	}
	var b strings.Builder
	b.Grow(len(p) + 1)
	for _, s := range out {
		b.WriteByte('/')
		b.WriteString(s)
	}
	if trailing || len(out) == 0 {
		b.WriteByte('/')
	}
	return b.String()
}

// needsClean reports whether p is not already in cleanPath's form, so the
// common case allocates nothing.
func needsClean(p string) bool {
	if p == "" || p[0] != '/' {
		return true
	}
	for i := 1; i < len(p); i++ {
		if p[i] == '/' && p[i-1] == '/' {
			return true
		}
		if p[i] == '.' && p[i-1] == '/' {
			// "/." or "/.." as a whole segment
			j := i + 1
			if j < len(p) && p[j] == '.' {
				j++
			}
			if j == len(p) || p[j] == '/' {
				return true
			}
		}
	}
	return false
}
