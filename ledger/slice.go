package ledger

import (
	"context"
	"net/http"
	"slices"

	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/fava"
)

// sliceEdit is a PUT or DELETE source_slice: the entry Fava knows by
// hash, the checksum of the slice the client saw, and for PUT its new text.
type sliceEdit struct {
	EntryHash string `json:"entry_hash"`
	Source    string `json:"source"`
	SHA256    string `json:"sha256sum"`
	remove    bool
}

// editSlice handles PUT and DELETE source_slice. The edit is forwarded
// first. When Fava answers that the hash is unknown or that the slice
// changed (entry hashes include line numbers, so an entry that moved
// because lines were added above it has a new hash, and an old hash that
// still resolves reads the wrong lines), favaproxy finds the entry itself:
// the client's sha256sum names the exact text it saw, so the single block
// of the ledger's files whose slice has that checksum is the entry. It
// performs the edit on that file's text (as Fava's own slice edit would)
// and writes it with PUT source and the file's current checksum, under the
// same ledger lock, and answers as Fava would have: the new slice's
// checksum, or "Deleted entry <hash>.". No such block, or more than one,
// is a 409 conflict of kind slice.
func (l *Ledger) editSlice(ctx context.Context, req *Request) (*Response, error) {
	// Read as Fava reads it: DELETE from the query string, PUT from the
	// JSON body's exact members.
	p, err := readParams(req)
	if err != nil {
		return nil, err
	}
	ed := sliceEdit{remove: req.Method == http.MethodDelete}
	for name, dst := range map[string]*string{"entry_hash": &ed.EntryHash, "sha256sum": &ed.SHA256, "source": &ed.Source} {
		if *dst, _, err = p.str(name); err != nil {
			return nil, err
		}
	}
	if ed.EntryHash == "" || ed.SHA256 == "" {
		// Fava answers a malformed request in its own words.
		return l.underLock(l.forward)(ctx, req)
	}
	relocate, favaMsg, favaPath, kind := false, "", "", ""
	return l.withRetries(ctx, req, func(ctx context.Context, req *Request) attemptResult {
		if !relocate {
			var applied func() (*Response, bool)
			var want *expectation
			if !ed.remove {
				applied = func() (*Response, bool) { return l.appliedSlice(&ed) }
				want = &expectation{sliceOld: ed.SHA256, sliceNew: checksum.String(ed.Source)}
			}
			res := l.sendAttempt(ctx, req, l.sliceFiles(ed.SHA256), want, req.Method, req.URL, req.Body, applied)
			if res.resp == nil {
				return res
			}
			switch rep := res.reply; rep.Outcome {
			case fava.UnknownHash, fava.Conflict:
				relocate, favaMsg, favaPath = true, rep.Message, rep.ConflictPath
				kind = ConflictSlice
				if rep.Outcome == fava.UnknownHash {
					kind = ConflictEntryHash
				}
			default:
				return res
			}
		}
		res := l.relocateSlice(ctx, req, &ed, favaMsg, favaPath)
		// Counted as the conflict Fava reported, however relocating went.
		res.conflict = kind
		if res.resp != nil && !res.retry && res.resp.Header.Get(RelocatedHeader) == "true" {
			res.resolved = ResolutionRelocated
		}
		return res
	})
}

// sliceMatch is a block whose slice has the checksum a client saw.
type sliceMatch struct {
	file string
	text string // the file's normalized text
	line int    // 1-based start line of the slice
}

// relocateSlice finds the entry of ed by its slice checksum and edits it
// with PUT source. It runs holding the ledger lock.
// favaMsg and favaPath are Fava's refusal of the forwarded edit, which the
// 409 repeats when the entry cannot be found.
func (l *Ledger) relocateSlice(ctx context.Context, req *Request, ed *sliceEdit, favaMsg, favaPath string) attemptResult {
	files, err := l.files(true)
	if err != nil {
		return attemptResult{err: err}
	}
	var found []sliceMatch
	for _, f := range files {
		text, err := l.readText(f)
		if err != nil {
			continue
		}
		for _, line := range beancount.FindSlices(text, ed.SHA256) {
			found = append(found, sliceMatch{file: f, text: text, line: line})
		}
	}
	if len(found) != 1 {
		// Gone or changed (no match), or ambiguous (several identical
		// entries): the client has to look again.
		path, current := favaPath, ""
		if len(found) > 1 {
			path, current = found[0].file, ed.SHA256
		}
		return l.conflict(favaMsg, fava.ConflictSlice, path, current)
	}
	m := found[0]
	req.touches(m.file)
	var (
		out  string
		data any
	)
	if ed.remove {
		out, err = beancount.DeleteSlice(m.text, m.line)
		data = "Deleted entry " + ed.EntryHash + "."
	} else {
		var sum string
		out, sum, err = beancount.ReplaceSlice(m.text, m.line, ed.Source)
		data = sum
	}
	if err != nil {
		return l.conflict(favaMsg, fava.ConflictSlice, m.file, "")
	}
	// Fava's PUT source writes the text back with the newline of the
	// file's first line, as its slice edits do.
	res := l.putSourceText(ctx, req, m.file, out, checksum.String(m.text))
	return l.answerWith(res, data, RelocatedHeader)
}

// appliedSlice reports, after Fava's answer to a PUT source_slice was lost,
// whether the edit happened: exactly one entry of the ledger has the new
// slice and none has the old one. Then it returns the success Fava would
// have sent. (A lost DELETE is not judged: the old slice being gone does not
// show that this request removed it.)
func (l *Ledger) appliedSlice(ed *sliceEdit) (*Response, bool) {
	files, err := l.files(true)
	if err != nil {
		return nil, false
	}
	newSum := checksum.String(ed.Source)
	found := 0
	for _, f := range files {
		text, err := l.readText(f)
		if err != nil {
			return nil, false
		}
		if len(beancount.FindSlices(text, ed.SHA256)) > 0 {
			return nil, false
		}
		found += len(beancount.FindSlices(text, newSum))
	}
	if found != 1 {
		return nil, false
	}
	return l.success(newSum, ""), true
}

// sliceFiles returns the files that hold an entry whose slice has checksum
// sum (the files a slice edit may change), or, when none does, all of the
// ledger's files.
func (l *Ledger) sliceFiles(sum string) []string {
	var out []string
	for _, o := range l.index.SliceSum(sum) {
		if !slices.Contains(out, o.File) {
			out = append(out, o.File)
		}
	}
	if len(out) == 0 {
		out, _ = l.files(false)
	}
	return out
}
