package proxy

import (
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy"
)

func testClassifier() *classifier {
	return &classifier{slugs: map[string]bool{"main": true, "other-2": true}}
}

func TestClassify(t *testing.T) {
	c := testClassifier()
	cp := &classifier{prefix: "/fava", slugs: c.slugs}
	for _, tc := range []struct {
		c            *classifier
		method, path string
		slug         string
		kind         favaproxy.Kind
	}{
		{c, "GET", "/", "", favaproxy.KindStatic},
		{c, "GET", "/static/app.js", "", favaproxy.KindStatic},
		{c, "GET", "/livez", "", favaproxy.KindStatic},
		{c, "GET", "/unknown/api/add_entries", "", favaproxy.KindStatic},
		{c, "GET", "/main", "main", favaproxy.KindRead},
		{c, "GET", "/main/income_statement/", "main", favaproxy.KindRead},
		{c, "GET", "/main/api/ledger_data", "main", favaproxy.KindRead},
		{c, "HEAD", "/main/api/changed", "main", favaproxy.KindRead},
		{c, "OPTIONS", "/main/api/add_entries", "main", favaproxy.KindRead},
		{c, "PUT", "/main/api/add_entries", "main", favaproxy.KindAddEntries},
		{c, "PUT", "/main/api/add_account", "main", favaproxy.KindAddAccount},
		{c, "PUT", "/main/api/source", "main", favaproxy.KindSource},
		{c, "PUT", "/main/api/source_slice", "main", favaproxy.KindSlice},
		{c, "DELETE", "/main/api/source_slice", "main", favaproxy.KindSlice},
		{c, "PUT", "/main/api/attach_document", "main", favaproxy.KindDocument},
		{c, "PUT", "/main/api/add_document", "main", favaproxy.KindDocument},
		{c, "PUT", "/main/api/move", "main", favaproxy.KindDocument},
		{c, "GET", "/main/api/move", "main", favaproxy.KindDocument},
		{c, "HEAD", "/main/api/move", "main", favaproxy.KindDocument},
		{c, "DELETE", "/main/api/document", "main", favaproxy.KindDocument},
		{c, "PUT", "/main/api/upload_import_file", "main", favaproxy.KindImport},
		{c, "POST", "/main/api/add_entries", "main", favaproxy.KindWrite},
		{c, "put", "/main/api/add_entries", "main", favaproxy.KindWrite},
		{c, "POST", "/main/extension/x/run", "main", favaproxy.KindWrite},
		{c, "PUT", "/main/api/format_source", "main", favaproxy.KindWrite},
		{c, "PUT", "/other-2/api/source", "other-2", favaproxy.KindSource},
		{c, "PUT", "/unknown/api/add_entries", "", favaproxy.KindWrite},
		{c, "DELETE", "/", "", favaproxy.KindWrite},
		{c, "POST", "/livez", "", favaproxy.KindWrite},
		// Paths that try to dodge the lock: decoded once, cleaned.
		{c, "PUT", "//main/api/add_entries", "main", favaproxy.KindAddEntries},
		{c, "PUT", "/main//api//add_entries", "main", favaproxy.KindAddEntries},
		{c, "PUT", "/x/../main/api/add_entries", "main", favaproxy.KindAddEntries},
		{c, "PUT", "/./main/./api/source", "main", favaproxy.KindSource},
		{c, "PUT", "/../../main/api/source", "main", favaproxy.KindSource},
		{c, "GET", "/static/../main/api/move", "main", favaproxy.KindDocument},
		{c, "PUT", "/main;x/api/add_entries", "", favaproxy.KindWrite},
		{c, "PUT", "/main/api/add_entries;x", "main", favaproxy.KindWrite},
		{c, "PUT", "main/api/add_entries", "main", favaproxy.KindAddEntries},
		// Upstream prefix: judged with or without it.
		{cp, "PUT", "/fava/main/api/add_entries", "main", favaproxy.KindAddEntries},
		{cp, "PUT", "/main/api/add_entries", "main", favaproxy.KindAddEntries},
		{cp, "GET", "/fava/", "", favaproxy.KindStatic},
		{cp, "GET", "/fava", "", favaproxy.KindStatic},
		{cp, "PUT", "//fava//main/api/source", "main", favaproxy.KindSource},
		{cp, "GET", "/favaX/main/", "", favaproxy.KindStatic},
	} {
		slug, kind := tc.c.route(tc.method, tc.path)
		if slug != tc.slug || kind != tc.kind {
			t.Errorf("classify(%q, %q) = %q, %q; want %q, %q", tc.method, tc.path, slug, kind, tc.slug, tc.kind)
		}
	}
}

// TestClassifyDecodesOnce pins that the path classified is the request's
// path decoded once, as werkzeug routes it: /%61pi/ is /api/, and %2F is a
// slash.
func TestClassifyDecodesOnce(t *testing.T) {
	c := testClassifier()
	for _, tc := range []struct {
		target string
		slug   string
		kind   favaproxy.Kind
	}{
		{"/main/%61pi/add_entries", "main", favaproxy.KindAddEntries},
		{"/%6dain/api/add_%65ntries", "main", favaproxy.KindAddEntries},
		{"/main%2Fapi%2Fsource", "main", favaproxy.KindSource},
		{"/x/%2e%2e/main/api/source", "main", favaproxy.KindSource},
		{"/main/api/%2561dd_entries", "main", favaproxy.KindWrite},
	} {
		u, err := url.ParseRequestURI(tc.target)
		if err != nil {
			t.Fatal(err)
		}
		slug, kind := c.route("PUT", u.Path)
		if slug != tc.slug || kind != tc.kind {
			t.Errorf("PUT %s = %q, %q; want %q, %q", tc.target, slug, kind, tc.slug, tc.kind)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"":            "/",
		"/":           "/",
		"//":          "/",
		"/a":          "/a",
		"/a/":         "/a/",
		"/a//b/":      "/a/b/",
		"/a/./b":      "/a/b",
		"/a/.":        "/a/",
		"/a/..":       "/",
		"/a/../b/":    "/b/",
		"/../a":       "/a",
		"a/b":         "/a/b",
		"/a/.b/..c/":  "/a/.b/..c/",
		"/a/.../b":    "/a/.../b",
		"/main;x/api": "/main;x/api",
	} {
		if got := cleanPath(in); got != want {
			t.Errorf("cleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzClassify checks that no method or path encoding gets a request past
// the write lock: every method but GET, HEAD and OPTIONS is a write, and a
// write under a ledger (judged by path.Clean, an independent cleaner) is
// attributed to that ledger.
func FuzzClassify(f *testing.F) {
	for _, s := range []struct{ method, target string }{
		{"PUT", "/main/api/add_entries"},
		{"GET", "/main/api/move"},
		{"HEAD", "/main/api/move"},
		{"DELETE", "/main/api/source_slice?entry_hash=x"},
		{"POST", "/main/extension/x/y"},
		{"PUT", "//main/api/source"},
		{"PUT", "/x/../main/api/source"},
		{"PUT", "/main/%61pi/add_entries"},
		{"PUT", "/main%2fapi%2fsource"},
		{"PUT", "/main;a/api/source"},
		{"PUT", "/./main/api/source/"},
		{"put", "/main/api/add_entries"},
		{"PATCH", "/fava/main/api/x"},
		{"GET", "/static/../main/"},
		{"GET", "/"},
		{"PROPFIND", "/other-2/"},
	} {
		f.Add(s.method, s.target)
	}
	c := testClassifier()
	cp := &classifier{prefix: "/fava", slugs: c.slugs}
	f.Fuzz(func(t *testing.T, method, target string) {
		u, err := url.ParseRequestURI(target)
		if err != nil || !strings.HasPrefix(u.Path, "/") {
			return
		}
		for _, c := range []*classifier{c, cp} {
			slug, kind := c.route(method, u.Path)
			if slug != "" && !c.slugs[slug] {
				t.Fatalf("classify(%q, %q) = unknown slug %q", method, u.Path, slug)
			}
			if !safeMethod(method) && !kind.IsWrite() {
				t.Fatalf("classify(%q, %q) = %q, want a write", method, u.Path, kind)
			}
			if safeMethod(method) && kind.IsWrite() && kind != favaproxy.KindDocument {
				t.Fatalf("classify(%q, %q) = %q, want no write", method, u.Path, kind)
			}
			p := path.Clean(u.Path)
			if c.prefix != "" && (p == c.prefix || strings.HasPrefix(p, c.prefix+"/")) {
				p = "/" + strings.TrimPrefix(strings.TrimPrefix(p, c.prefix), "/")
			}
			first, _, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
			if c.slugs[first] && slug != first {
				t.Fatalf("classify(%q, %q) = slug %q, want %q", method, u.Path, slug, first)
			}
			if !c.slugs[first] && slug != "" {
				t.Fatalf("classify(%q, %q) = slug %q, want none", method, u.Path, slug)
			}
		}
	})
}

func BenchmarkClassify(b *testing.B) {
	c := testClassifier()
	for _, bc := range []struct{ name, method, path string }{
		{"Page", "GET", "/main/income_statement/"},
		{"Write", "PUT", "/main/api/add_entries"},
		{"Dirty", "PUT", "/x/..//main/./api/add_entries"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				c.route(bc.method, bc.path)
			}
		})
	}
}
