package favatest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/favaproxy/favaproxy/checksum"
)

// param is one parameter of an API endpoint; list marks list[Any].
type param struct {
	name string
	list bool
}

// endpoint is one JSON API route: Fava's api_endpoint-decorated function.
type endpoint struct {
	method string
	params []param
	fn     func(s *Server, l *ledger, r *http.Request, args map[string]any) (any, error)
}

func p(names ...string) []param {
	out := make([]param, len(names))
	for i, n := range names {
		out[i] = param{name: n}
	}
	return out
}

// endpoints returns the API of the server's style, keyed by name then
// method.
func (s *Server) endpoints() map[string]map[string]endpoint {
	api := map[string]map[string]endpoint{}
	add := func(name string, e endpoint) {
		if api[name] == nil {
			api[name] = map[string]endpoint{}
		}
		api[name][e.method] = e
	}
	add("changed", endpoint{http.MethodGet, nil, apiChanged})
	add("errors", endpoint{http.MethodGet, nil, apiErrors})
	add("ledger_data", endpoint{http.MethodGet, nil, apiLedgerData})
	add("journal", endpoint{http.MethodGet, nil, apiJournal})
	add("context", endpoint{http.MethodGet, p("entry_hash"), apiContext})
	add("source", endpoint{http.MethodGet, nil, apiGetSource})
	add("source", endpoint{http.MethodPut, p("file_path", "source", "sha256sum"), apiPutSource})
	add("source_slice", endpoint{http.MethodPut, p("entry_hash", "source", "sha256sum"), apiPutSlice})
	add("source_slice", endpoint{http.MethodDelete, p("entry_hash", "sha256sum"), apiDeleteSlice})
	if s.style.sourceSliceGET {
		add("source_slice", endpoint{http.MethodGet, p("entry_hash"), apiGetSlice})
	}
	add("add_entries", endpoint{http.MethodPut, []param{{name: "entries", list: true}}, apiAddEntries})
	add("attach_document", endpoint{http.MethodPut, p("filename", "entry_hash"), apiAttachDocument})
	add("add_document", endpoint{http.MethodPut, nil, apiAddDocument})
	add("move", endpoint{s.style.moveMethod, p("account", "new_name", "filename"), apiMove})
	add("document", endpoint{http.MethodDelete, p("filename"), apiDeleteDocument})
	add("format_source", endpoint{http.MethodPut, p("source"), apiFormatSource})
	if s.style.name == Style127 {
		add("query_result", endpoint{http.MethodGet, p("query_string"), apiQueryResult})
	} else {
		add("query", endpoint{http.MethodGet, p("query_string"), apiQuery})
	}
	return api
}

func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request, l *ledger, name string) {
	routes, ok := s.endpoints()[name]
	if !ok {
		htmlError(w, http.StatusNotFound)
		return
	}
	method := r.Method
	if method == http.MethodHead {
		method = http.MethodGet
	}
	ep, ok := routes[method]
	if !ok {
		var methods []string
		for m := range routes {
			methods = append(methods, m)
		}
		allow(w, r, methods...)
		return
	}
	args, err := s.validate(r, ep)
	var data any
	if err == nil {
		data, err = ep.fn(s, l, r, args)
	}
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		writeJSON(w, s.style.status(ae), s.style.errorBody(ae))
	case err != nil: // an uncaughtError, or any other failure
		htmlError(w, http.StatusInternalServerError)
	default:
		writeJSON(w, http.StatusOK, s.style.successBody(data, l.mtime()))
	}
}

// validate collects an endpoint's parameters as Fava's validator does:
// from the JSON body for PUT, from the query string otherwise.
func (s *Server) validate(r *http.Request, ep endpoint) (map[string]any, error) {
	if len(ep.params) == 0 {
		return nil, nil
	}
	var data map[string]any
	if ep.method == http.MethodPut {
		// Flask's get_json reads a body only with a JSON media type.
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" && !strings.HasSuffix(mt, "+json") {
			return nil, s.style.invalidJSON
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, plainError(err.Error())
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		if err := dec.Decode(&data); err != nil || data == nil {
			return nil, s.style.invalidJSON
		}
	} else {
		data = map[string]any{}
		q := r.URL.Query()
		for k := range q {
			data[k] = q.Get(k)
		}
	}
	for _, p := range ep.params {
		v, ok := data[p.name]
		if !ok || v == nil {
			return nil, validationError(fmt.Sprintf("Parameter `%s` is missing.", p.name))
		}
		if _, isList := v.([]any); p.list != isList {
			return nil, validationError(fmt.Sprintf("Parameter `%s` of incorrect type", p.name) + s.style.typeSuffix(p.list))
		}
		if _, isStr := v.(string); !p.list && !isStr {
			return nil, validationError(fmt.Sprintf("Parameter `%s` of incorrect type", p.name) + s.style.typeSuffix(false))
		}
	}
	return data, nil
}

func apiChanged(s *Server, l *ledger, r *http.Request, _ map[string]any) (any, error) {
	return l.changed()
}

func apiErrors(s *Server, l *ledger, r *http.Request, _ map[string]any) (any, error) {
	out := []any{}
	for _, e := range l.snapshot().errors {
		out = append(out, map[string]any{
			"type":    "ParserError",
			"message": e.message,
			"source":  map[string]any{"filename": e.file, "lineno": e.lineno},
		})
	}
	return out, nil
}

func apiLedgerData(s *Server, l *ledger, r *http.Request, _ map[string]any) (any, error) {
	snap := l.snapshot()
	accounts := make([]string, 0, len(snap.accounts))
	for a := range snap.accounts {
		accounts = append(accounts, a)
	}
	sort.Strings(accounts)
	return map[string]any{
		"accounts": accounts,
		"options": map[string]any{
			"title": snap.title, "filename": l.main, "include": snap.files,
			"documents": nonNil(snap.documents),
		},
	}, nil
}

// apiJournal lists every entry with its entry_hash, after a reload check,
// as Fava's get_journal does.
func apiJournal(s *Server, l *ledger, r *http.Request, _ map[string]any) (any, error) {
	if _, err := l.changed(); err != nil {
		return nil, err
	}
	snap := l.snapshot()
	out := make([]any, 0, len(snap.entries))
	for _, e := range snap.entries {
		out = append(out, e.serialise())
	}
	return out, nil
}

func (l *ledger) entry(hash string) (*entry, error) {
	if e := l.snapshot().byHash[hash]; e != nil {
		return e, nil
	}
	return nil, hashNotFoundError(hash)
}

// entrySlice finds the entry with hash in the last load and reads its slice
// from the file as it is now, as Fava's get_entry_slice does.
func (s *Server) entrySlice(l *ledger, hash string) (*entry, string, error) {
	e, err := l.entry(hash)
	if err != nil {
		return nil, "", err
	}
	raw, err := s.readSource(e.file)
	if err != nil {
		return nil, "", plainError(err.Error())
	}
	slice, ok := checksum.Slice(string(checksum.Normalize(raw)), e.lineno)
	if !ok {
		return nil, "", &uncaughtError{"IndexError: list index out of range"}
	}
	return e, slice, nil
}

func apiContext(s *Server, l *ledger, r *http.Request, args map[string]any) (any, error) {
	e, slice, err := s.entrySlice(l, args["entry_hash"].(string))
	if err != nil {
		return nil, err
	}
	var before, after any
	if e.kind == "Transaction" || e.kind == "Balance" {
		before, after = map[string]any{}, map[string]any{}
	}
	out := map[string]any{"entry": e.serialise(), "balances_before": before, "balances_after": after}
	if s.style.contextSlice {
		out["slice"] = slice
		out["sha256sum"] = checksum.String(slice)
	}
	return out, nil
}

func apiGetSlice(s *Server, l *ledger, r *http.Request, args map[string]any) (any, error) {
	_, slice, err := s.entrySlice(l, args["entry_hash"].(string))
	if err != nil {
		return nil, err
	}
	return map[string]any{"slice": slice, "sha256sum": checksum.String(slice)}, nil
}

// sourceFile checks that path is one of the ledger's files, as Fava's
// get_source does.
func (l *ledger) sourceFile(path string) error {
	if slices.Contains(l.snapshot().files, path) {
		return nil
	}
	return plainError(fmt.Sprintf("Trying to read a non-source file at '%s'", path))
}

func apiGetSource(s *Server, l *ledger, r *http.Request, _ map[string]any) (any, error) {
	path := r.URL.Query().Get("filename")
	if path == "" {
		path = l.main
	}
	if err := l.sourceFile(path); err != nil {
		return nil, err
	}
	raw, err := s.readSource(path)
	if err != nil {
		return nil, plainError(err.Error())
	}
	if !utf8.Valid(raw) {
		return nil, plainError("The source file contains invalid unicode: 'utf-8' codec can't decode.")
	}
	text := string(checksum.Normalize(raw))
	return map[string]any{"file_path": path, "sha256sum": checksum.String(text), "source": text}, nil
}

func apiPutSource(s *Server, l *ledger, r *http.Request, args map[string]any) (any, error) {
	path, source, sum := args["file_path"].(string), args["source"].(string), args["sha256sum"].(string)
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if err := l.sourceFile(path); err != nil {
		return nil, err
	}
	err := s.rewrite(path, func(lines []string) ([]string, error) {
		if checksum.String(strings.Join(lines, "")) != sum {
			return nil, changedExternallyError(path)
		}
		return []string{source}, nil
	})
	if err != nil {
		return nil, err
	}
	l.notify(path)
	if err := l.reload(); err != nil {
		return nil, err
	}
	return checksum.String(source), nil
}

// sliceEdit replaces (or with remove, deletes along with the blank lines
// after it) the slice of e, after checking its checksum.
func sliceEdit(e *entry, sum, source string, remove bool) func([]string) ([]string, error) {
	return func(lines []string) ([]string, error) {
		first := e.lineno - 1
		if first >= len(lines) {
			return nil, &uncaughtError{"IndexError: list index out of range"}
		}
		n := checksum.EntryLines(lines, first)
		if checksum.String(checksum.JoinSlice(lines[first:first+n])) != sum {
			return nil, changedExternallyError(e.file)
		}
		last := first + n
		var mid []string
		if remove {
			for last < len(lines) && strings.TrimSpace(lines[last]) == "" {
				last++
			}
		} else {
			mid = []string{source + "\n"}
		}
		out := append(append(append([]string{}, lines[:first]...), mid...), lines[last:]...)
		return out, nil
	}
}

func apiPutSlice(s *Server, l *ledger, r *http.Request, args map[string]any) (any, error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	e, err := l.entry(args["entry_hash"].(string))
	if err != nil {
		return nil, err
	}
	source := args["source"].(string)
	if err := s.rewrite(e.file, sliceEdit(e, args["sha256sum"].(string), source, false)); err != nil {
		return nil, err
	}
	l.notify(e.file)
	return checksum.String(source), nil
}

func apiDeleteSlice(s *Server, l *ledger, r *http.Request, args map[string]any) (any, error) {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	hash := args["entry_hash"].(string)
	e, err := l.entry(hash)
	if err != nil {
		return nil, err
	}
	if err := s.rewrite(e.file, sliceEdit(e, args["sha256sum"].(string), "", true)); err != nil {
		return nil, err
	}
	l.notify(e.file)
	return fmt.Sprintf("Deleted entry %s.", hash), nil
}

func apiAddEntries(s *Server, l *ledger, r *http.Request, args map[string]any) (any, error) {
	raw := args["entries"].([]any)
	entries := make([]*newEntry, 0, len(raw))
	for _, x := range raw {
		e, err := deserialise(x)
		if err != nil {
			return nil, err
		}
		entries = append(entries, e)
	}
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if _, err := l.changed(); err != nil {
		return nil, err
	}
	order := func(e *newEntry) int {
		if e.kind == "Balance" {
			return -1
		}
		return 0
	}
	sort.SliceStable(entries, func(i, j int) bool {
		if entries[i].date != entries[j].date {
			return entries[i].date < entries[j].date
		}
		return order(entries[i]) < order(entries[j])
	})
	snap := l.snapshot()
	opts := slices.Clone(snap.insertOpts)
	def := s.style.defaultFile(l.main, snap.defaultFile)
	for _, e := range entries {
		content, err := e.render(DefaultCurrencyColumn)
		if err != nil {
			return nil, err
		}
		// One whole-file rewrite per entry, as Fava's insert_entry does:
		// before the matching insert-entry option, or appended to the
		// default file.
		file, at := findInsertPosition(e, opts, def)
		err = s.rewrite(file, func(lines []string) ([]string, error) {
			if at < 0 {
				return append(lines, "\n"+content), nil
			}
			return slices.Insert(slices.Clone(lines), min(at, len(lines)), content+"\n"), nil
		})
		if err != nil {
			return nil, err
		}
		if at >= 0 {
			// The options below the insertion moved down, until the next
			// reload reads them again.
			added := strings.Count(content, "\n") + 1
			for i := range opts {
				if opts[i].file == file && opts[i].lineno-1 > at {
					opts[i].lineno += added
				}
			}
		}
		l.notify(file)
	}
	return fmt.Sprintf("Stored %d entries.", len(entries)), nil
}

// findInsertPosition is Fava's find_insert_position: for each account of
// the entry (a transaction's postings in reverse order), the insert-entry
// options from the latest date back, skipping those not dated before the
// entry; the first whose pattern matches gives the file and the 0-based
// line to insert at (the option's own line). Without one, -1: append to
// def.
func findInsertPosition(e *newEntry, opts []insertOpt, def string) (file string, at int) {
	var accounts []string
	if e.kind == "Transaction" {
		for i := len(e.postings) - 1; i >= 0; i-- {
			accounts = append(accounts, e.postings[i].account)
		}
	} else if e.account != "" {
		accounts = []string{e.account}
	}
	sorted := slices.Clone(opts)
	slices.SortStableFunc(sorted, func(a, b insertOpt) int { return strings.Compare(b.date, a.date) })
	for _, a := range accounts {
		for _, o := range sorted {
			if o.date >= e.date {
				continue
			}
			if o.re.MatchString(a) {
				return o.file, o.lineno - 1
			}
		}
	}
	return def, -1
}

// insertMetadata is Fava's insert_metadata: reload if changed, find the
// entry, and insert `key: "value"` under its first line.
func (s *Server) insertMetadata(l *ledger, hash, basekey, value string) error {
	l.writeMu.Lock()
	defer l.writeMu.Unlock()
	if _, err := l.changed(); err != nil {
		return err
	}
	e, err := l.entry(hash)
	if err != nil {
		return err
	}
	key := basekey
	for i := 2; ; i++ {
		if _, taken := e.meta[key]; !taken {
			break
		}
		key = fmt.Sprintf("%s-%d", basekey, i)
	}
	err = s.rewrite(e.file, func(lines []string) ([]string, error) {
		at := min(e.lineno, len(lines))
		line := fmt.Sprintf("  %s: \"%s\"\n", key, value)
		return slices.Insert(slices.Clone(lines), at, line), nil
	})
	if err != nil {
		return err
	}
	l.notify(e.file)
	return nil
}

func apiAttachDocument(s *Server, l *ledger, r *http.Request, args map[string]any) (any, error) {
	filename := args["filename"].(string)
	if err := s.insertMetadata(l, args["entry_hash"].(string), "document", filename); err != nil {
		return nil, err
	}
	return fmt.Sprintf("Attached '%s' to entry.", filename), nil
}

// isDocument is Fava's is_document_or_import_file: a Document entry's file,
// which includes the dated files in account folders below a documents
// folder (looked at live, as Fava's folder watcher would have reloaded).
func (l *ledger) isDocument(filename string) bool {
	snap := l.snapshot()
	if snap.docFiles[filename] {
		return true
	}
	for _, dir := range snap.docDirs {
		if snap.inDocumentFolder(dir, filename) {
			return true
		}
	}
	return false
}

// documentPath is Fava's filepath_in_document_folder.
func (l *ledger) documentPath(folder, account, name string) (string, error) {
	snap := l.snapshot()
	i := slices.Index(snap.documents, folder)
	if i < 0 {
		return "", plainError(fmt.Sprintf("Not a documents folder: %s.", folder))
	}
	if !snap.accounts[account] {
		return "", plainError(fmt.Sprintf("Not a valid account: '%s'", account))
	}
	name = strings.ReplaceAll(name, "/", " ")
	parts := append([]string{snap.docDirs[i]}, strings.Split(account, ":")...)
	return filepath.Join(append(parts, name)...), nil
}

func noDocumentsFolder() *apiError {
	return statusError(http.StatusUnprocessableEntity, "You need to set a documents folder.")
}

func apiMove(s *Server, l *ledger, r *http.Request, args map[string]any) (any, error) {
	account, newName, filename := args["account"].(string), args["new_name"].(string), args["filename"].(string)
	snap := l.snapshot()
	if len(snap.documents) == 0 {
		return nil, noDocumentsFolder()
	}
	newPath, err := l.documentPath(snap.documents[0], account, newName)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(filename); err != nil || !fi.Mode().IsRegular() {
		return nil, statusError(http.StatusUnprocessableEntity, fmt.Sprintf("Not a file: '%s'", filename))
	}
	if s.style.moveChecksDocument && !l.isDocument(filename) {
		return nil, s.style.notDocument(filename)
	}
	if _, err := os.Stat(newPath); err == nil {
		return nil, statusError(http.StatusConflict, fmt.Sprintf("%s already exists.", newPath))
	}
	if err := os.MkdirAll(filepath.Dir(newPath), 0o755); err != nil {
		return nil, plainError(err.Error())
	}
	if err := os.Rename(filename, newPath); err != nil {
		return nil, plainError(err.Error())
	}
	return fmt.Sprintf("Moved %s to %s.", filename, newPath), nil
}

func apiDeleteDocument(s *Server, l *ledger, r *http.Request, args map[string]any) (any, error) {
	filename := args["filename"].(string)
	if !l.isDocument(filename) {
		return nil, s.style.notDocument(filename)
	}
	if _, err := os.Stat(filename); err != nil {
		msg := fmt.Sprintf("%s does not exist.", filename)
		if s.style.missingDocumentStatus != 0 {
			return nil, statusError(s.style.missingDocumentStatus, msg)
		}
		return nil, plainError(msg)
	}
	if err := os.Remove(filename); err != nil {
		return nil, plainError(err.Error())
	}
	return fmt.Sprintf("Deleted %s.", filename), nil
}

func apiAddDocument(s *Server, l *ledger, r *http.Request, _ map[string]any) (any, error) {
	snap := l.snapshot()
	if len(snap.documents) == 0 {
		return nil, noDocumentsFolder()
	}
	if err := r.ParseMultipartForm(32 << 20); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		return nil, plainError(err.Error())
	}
	file, header, err := r.FormFile("file")
	if err != nil {
		return nil, statusError(http.StatusBadRequest, "No file uploaded.")
	}
	defer file.Close()
	if header.Filename == "" {
		return nil, statusError(http.StatusBadRequest, "Uploaded file is missing filename.")
	}
	form := func(name string) (string, error) {
		if v, ok := r.MultipartForm.Value[name]; ok && len(v) > 0 {
			return v[0], nil
		}
		return "", validationError(fmt.Sprintf("Parameter `%s` is missing.", name))
	}
	folder, err := form("folder")
	if err != nil {
		return nil, err
	}
	account, err := form("account")
	if err != nil {
		return nil, err
	}
	path, err := l.documentPath(folder, account, header.Filename)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err == nil {
		return nil, statusError(http.StatusConflict, fmt.Sprintf("%s already exists.", path))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, plainError(err.Error())
	}
	body, err := io.ReadAll(file)
	if err != nil {
		return nil, plainError(err.Error())
	}
	if err := os.WriteFile(path, body, 0o644); err != nil {
		return nil, plainError(err.Error())
	}
	if hash := r.FormValue("hash"); hash != "" {
		if err := s.insertMetadata(l, hash, "document", filepath.Base(path)); err != nil {
			return nil, err
		}
	}
	return fmt.Sprintf("Uploaded to %s", path), nil
}

func apiFormatSource(s *Server, l *ledger, r *http.Request, args map[string]any) (any, error) {
	return align(args["source"].(string), DefaultCurrencyColumn), nil
}
