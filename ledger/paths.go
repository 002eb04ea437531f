package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"os"
	"path/filepath"
	"strings"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/beancount"
)

// CheckRead checks the paths a read of the ledger's API endpoint name
// (as in /<slug>/api/<name>) with the raw query string rawQuery names: the
// filename of GET source.
func (l *Ledger) CheckRead(name, rawQuery string) error {
	if name != "source" {
		return nil
	}
	q, err := strictQuery(rawQuery)
	if err != nil {
		return err
	}
	file, _, err := params{query: q}.str("filename")
	if err != nil || file == "" {
		return err
	}
	lg, err := l.current()
	if err != nil {
		return err
	}
	if !isLedgerFile(file, lg.Files) {
		return favaproxy.FieldErrorf("filename", "not one of the ledger's files")
	}
	return nil
}

// checkWrite checks the paths a write names.
func (l *Ledger) checkWrite(req *Request) error {
	if req.Kind != favaproxy.KindDocument {
		return nil
	}
	lg, err := l.current()
	if err != nil {
		return err
	}
	folders := documentFolders(lg)
	name := strings.TrimPrefix(req.URL.Path, l.apiBase.Path)
	if name == "add_document" {
		folder, err := formValue(req.Header.Get("Content-Type"), req.Body, "folder")
		if err != nil {
			return err
		}
		for _, d := range lg.Options["documents"] {
			if folder == d {
				return nil
			}
		}
		return favaproxy.FieldErrorf("folder", "not one of the ledger's documents folders")
	}
	// Fava reads a PUT's parameters from its JSON body (move from 1.30.8,
	// attach_document), a GET's and a DELETE's from the query string.
	p, err := readParams(req)
	if err != nil {
		return err
	}
	switch name {
	case "attach_document":
		filename, ok, err := p.str("filename")
		if err != nil {
			return err
		}
		if !ok {
			return favaproxy.FieldErrorf("filename", "missing")
		}
		// The name is written into the ledger as document: "<name>".
		if strings.ContainsAny(filename, "\"\\") || hasControl(filename) {
			return favaproxy.FieldErrorf("filename", "holds a quote, backslash or control character")
		}
		return inFolders("filename", filename, lg.Main, folders)
	case "move":
		filename, _, err := p.str("filename")
		if err != nil {
			return err
		}
		if err := inFolders("filename", filename, lg.Main, folders); err != nil {
			return err
		}
		newName, _, err := p.str("new_name")
		if err != nil {
			return err
		}
		account, _, err := p.str("account")
		if err != nil {
			return err
		}
		if newName == "" || newName == "." || newName == ".." || strings.ContainsAny(newName, `/\`) || hasControl(newName) {
			return favaproxy.FieldErrorf("new_name", "not a file name")
		}
		if account == "" || strings.ContainsAny(account, `/\.`) || hasControl(account) {
			return favaproxy.FieldErrorf("account", "not an account name")
		}
		if len(folders) == 0 {
			return favaproxy.FieldErrorf("new_name", "the ledger has no documents folder")
		}
		target := filepath.Join(append([]string{folders[0]}, append(strings.Split(account, ":"), newName)...)...)
		return inFolders("new_name", target, lg.Main, folders)
	case "document":
		filename, _, err := p.str("filename")
		if err != nil {
			return err
		}
		return inFolders("filename", filename, lg.Main, folders)
	}
	return nil
}

// current refreshes the index and returns the ledger's files and options
// as they are on disk now.
func (l *Ledger) current() (*beancount.Ledger, error) {
	if err := l.index.Refresh(); err != nil {
		return nil, fmt.Errorf("read ledger: %w: %w", favaproxy.Errorf(favaproxy.EInternal, "cannot read the ledger"), err)
	}
	return l.index.Ledger(), nil
}

// maxFormParts bounds the parts of a multipart form favaproxy reads.
const maxFormParts = 64

// formValue returns the single value of a multipart form field of body.
func formValue(contentType string, body []byte, name string) (string, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || !strings.HasPrefix(mt, "multipart/") || params["boundary"] == "" {
		return "", favaproxy.Errorf(favaproxy.EInvalid, "want a multipart form")
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var vals []string
	for parts := 0; ; parts++ {
		if parts == maxFormParts {
			return "", favaproxy.Errorf(favaproxy.EInvalid, "more than %d parts in the form", maxFormParts)
		}
		p, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", favaproxy.Errorf(favaproxy.EInvalid, "malformed multipart form")
		}
		if p.FormName() == name && p.FileName() == "" {
			v, err := io.ReadAll(io.LimitReader(p, 4096))
			if err != nil {
				return "", favaproxy.Errorf(favaproxy.EInvalid, "malformed multipart form")
			}
			vals = append(vals, string(v))
		}
	}
	if len(vals) != 1 {
		return "", favaproxy.FieldErrorf(name, "want exactly one")
	}
	return vals[0], nil
}

// documentFolders returns the ledger's documents folders, absolute (relative
// ones are relative to the main file's directory) and resolved.
func documentFolders(lg *beancount.Ledger) []string {
	var out []string
	for _, d := range lg.Options["documents"] {
		out = append(out, resolvePath(absFrom(lg.Main, d)))
	}
	return out
}

// absFrom makes p absolute relative to main's directory.
func absFrom(main, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(filepath.Dir(main), p)
}

// inFolders refuses a path outside every folder of folders (after symlinks
// are evaluated as far as the path exists).
func inFolders(field, p, main string, folders []string) error {
	if p == "" {
		return favaproxy.FieldErrorf(field, "missing")
	}
	if hasControl(p) {
		return favaproxy.FieldErrorf(field, "holds a control character")
	}
	if len(p) > maxPath {
		// resolvePath looks at every prefix of the path: bound the work.
		return favaproxy.FieldErrorf(field, "longer than %d bytes", maxPath)
	}
	rp := resolvePath(absFrom(main, p))
	for _, f := range folders {
		if rel, err := filepath.Rel(f, rp); err == nil && rel != "." && rel != ".." &&
			!strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return nil
		}
	}
	return favaproxy.FieldErrorf(field, "not inside the ledger's documents folders")
}

// maxPath is the longest path a request may name (Linux's PATH_MAX): the
// checks of a path do work for each of its prefixes.
const maxPath = 4096

// isLedgerFile reports whether name, an absolute path, is one of files once
// symlinks are evaluated on both sides.
func isLedgerFile(name string, files []string) bool {
	if !filepath.IsAbs(name) || len(name) > maxPath {
		return false
	}
	rn := resolvePath(filepath.Clean(name))
	for _, f := range files {
		if filepath.Clean(name) == f || rn == resolvePath(f) {
			return true
		}
	}
	return false
}

// resolvePath evaluates the symlinks of p's longest existing prefix and
// appends the rest, so that a path not created yet resolves too.
func resolvePath(p string) string {
	rest := ""
	for cur := p; ; {
		r, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(r, rest)
		}
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, os.ErrNotExist) {
			return p // unreadable: compare as written
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// hasControl reports whether s holds a C0 control character or DEL.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}
