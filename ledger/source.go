package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/fava"
	"github.com/favaproxy/favaproxy/merge"
)

// MergedHeader is set to "true" on the answer to a PUT source whose stale
// edit favaproxy merged three-way into the file's current text.
const MergedHeader = "Favaproxy-Merged"

// RelocatedHeader is set to "true" on the answer to a source_slice edit that
// favaproxy carried out itself because the entry had moved.
const RelocatedHeader = "Favaproxy-Relocated"

// sourceBody is the body of Fava's PUT source.
type sourceBody struct {
	FilePath string `json:"file_path"`
	Source   string `json:"source"`
	SHA256   string `json:"sha256sum"`
}

// putSource handles PUT source. A client's checksum that is current is
// forwarded as it is. A stale one whose base text favaproxy remembers is
// merged three-way (base → current, base → client's text): a clean merge is
// written with the current checksum and answered with Fava's reply plus
// Favaproxy-Merged: true; overlapping edits, or an unknown base, get a 409
// conflict carrying the current checksum. The client's text is never sent
// with a checksum other than the one it was made from, which would erase
// the other writer's change.
func (l *Ledger) putSource(ctx context.Context, req *Request) (*Response, error) {
	// Read as Fava reads it: exact member names, no repeated member.
	p, err := readParams(req)
	if err != nil {
		return nil, err
	}
	var body sourceBody
	var okPath, okSum bool
	if body.FilePath, okPath, err = p.str("file_path"); err != nil {
		return nil, err
	}
	if body.SHA256, okSum, err = p.str("sha256sum"); err != nil {
		return nil, err
	}
	if body.Source, _, err = p.str("source"); err != nil {
		return nil, err
	}
	if okPath {
		// Whatever else the body holds, it names no file outside the
		// ledger.
		if _, err := l.sourceFile(body.FilePath); err != nil {
			return nil, err
		}
	}
	if !okPath || !okSum || body.SHA256 == "" {
		// Not a body favaproxy can reason about: Fava answers it in its
		// own words.
		return l.underLock(l.forward)(ctx, req)
	}
	file, err := l.sourceFile(body.FilePath)
	if err != nil {
		return nil, err
	}
	clientText := string(checksum.Normalize([]byte(body.Source)))
	req.touches(file)
	return l.withRetries(ctx, req, func(ctx context.Context, req *Request) attemptResult {
		cur, err := l.readText(file)
		if err != nil {
			// favaproxy cannot read the file itself: Fava decides.
			return l.sendAttempt(ctx, req, []string{file}, nil, req.Method, req.URL, req.Body, nil)
		}
		curSum := checksum.String(cur)
		if body.SHA256 == curSum {
			want := &expectation{sums: map[string]string{file: checksum.String(clientText)}}
			res := l.sendAttempt(ctx, req, []string{file}, want, req.Method, req.URL, req.Body, func() (*Response, bool) {
				return l.appliedFile(file, clientText)
			})
			switch res.reply.Outcome {
			case fava.Success:
				l.versions.Add(clientText)
			case fava.Conflict:
				if res.resp != nil {
					return l.fileConflict(body.FilePath, file)
				}
			}
			return res
		}
		base, ok := l.versions.Get(body.SHA256)
		if !ok {
			return l.conflict("", fava.ConflictFile, body.FilePath, curSum)
		}
		merged, ok := merge.ThreeWay(base, cur, clientText)
		if !ok {
			return l.conflict("", fava.ConflictFile, body.FilePath, curSum)
		}
		if merged == cur {
			// The client's change is in the file already.
			return attemptResult{resp: l.success(curSum, "", MergedHeader), reply: fava.Reply{Outcome: fava.Success},
				conflict: ConflictFile, resolved: ResolutionMerged}
		}
		res := l.putSourceText(ctx, req, body.FilePath, merged, curSum)
		if res.resp != nil && !res.retry && res.reply.Outcome == fava.Success {
			res.resp.Header.Set(MergedHeader, "true")
			res.conflict, res.resolved = ConflictFile, ResolutionMerged
		}
		return res
	})
}

// putSourceText sends PUT source of text over the file whose current text
// has checksum curSum, for an edit favaproxy derived itself. A checksum
// conflict means an outside writer changed the file since it was read:
// the answer asks for a retry, which re-reads and re-derives the edit.
// After an ambiguous failure the file is read back: if it holds text, the
// write happened and the answer is a success.
func (l *Ledger) putSourceText(ctx context.Context, req *Request, filePath, text, curSum string) attemptResult {
	body, err := json.Marshal(sourceBody{FilePath: filePath, Source: text, SHA256: curSum})
	if err != nil {
		return attemptResult{err: fmt.Errorf("encode source: %w", err)}
	}
	file := filepath.Clean(filePath)
	res := l.sendAttempt(ctx, req, []string{file}, &expectation{sums: map[string]string{file: checksum.String(text)}},
		http.MethodPut, l.apiURL("source", nil), body, func() (*Response, bool) {
			return l.appliedFile(file, text)
		})
	switch res.reply.Outcome {
	case fava.Success:
		l.versions.Add(text)
	case fava.Conflict:
		if res.resp != nil {
			return l.fileConflict(filePath, filepath.Clean(filePath))
		}
	}
	return res
}

// sendAttempt sends one write to Fava for an attempt, under a rollback of
// files (see sendWrite). A dial error asks for a retry (the request never
// reached Fava). Any other failure to get an answer, or an answer that is
// an upstream error (HTML 500, garbage), is ambiguous: the write may have
// happened, so applied, when given, is asked whether the file already
// holds what was asked for; if so its answer is the success.
func (l *Ledger) sendAttempt(ctx context.Context, req *Request, files []string, want *expectation, method string, u *url.URL, body []byte, applied func() (*Response, bool)) attemptResult {
	resp, _, err := l.sendWrite(ctx, req, files, want, method, u, body)
	switch {
	case err != nil && fava.IsDialError(err):
		return attemptResult{err: err, retry: true}
	case err != nil:
		if applied != nil {
			if ok, done := applied(); done {
				return attemptResult{resp: ok, reply: fava.Reply{Outcome: fava.Success}}
			}
		}
		return attemptResult{err: err}
	}
	if resp.Reply.Outcome == fava.UpstreamError && resp.Status >= 500 && applied != nil {
		if ok, done := applied(); done {
			return attemptResult{resp: ok, reply: fava.Reply{Outcome: fava.Success}}
		}
	}
	return attemptResult{resp: toResponse(resp), reply: resp.Reply}
}

// learnStyle asks Fava for the main file (a read that changes nothing), so
// that answers favaproxy writes itself are in Fava's wire style; the text
// is remembered as a version too.
func (l *Ledger) learnStyle(ctx context.Context, req *Request) {
	resp, err := l.send(ctx, req, http.MethodGet, l.apiURL("source", url.Values{"filename": {l.cfg.File}}), nil)
	if err == nil {
		l.rememberSource(resp.Reply)
	}
}

// success returns a success answer in Fava's style with data, plus each of
// flags (header names) set to "true".
func (l *Ledger) success(data any, mtime string, flags ...string) *Response {
	h := jsonHeader()
	for _, f := range flags {
		h.Set(f, "true")
	}
	return &Response{Status: http.StatusOK, Header: h, Body: fava.SuccessBody(l.styleOf(), data, mtime)}
}

// answerWith replaces the answer of res, when it is Fava's final success
// to a PUT source favaproxy made on the client's behalf, with a success in
// Fava's style carrying data (what the client's own request is answered
// with) and Fava's mtime, plus each of flags set to "true". Any other res
// is returned as it is.
func (l *Ledger) answerWith(res attemptResult, data any, flags ...string) attemptResult {
	if res.resp == nil || res.retry || res.reply.Outcome != fava.Success {
		return res
	}
	res.resp = l.success(data, res.reply.Mtime, flags...)
	return res
}

// conflict answers a conflict favaproxy could not resolve: 409, Fava's
// message (for filePath when msg is empty) and keys in Fava's style, and
// what the client needs to reload.
func (l *Ledger) conflict(msg string, kind fava.ConflictKind, filePath, current string) attemptResult {
	if msg == "" {
		msg = fava.ConflictMessage(filePath)
	}
	status, body := fava.ConflictReply(l.styleOf(), msg,
		fava.ConflictInfo{Kind: kind, FilePath: filePath, CurrentSHA256: current})
	mk := ConflictFile
	if kind == fava.ConflictSlice {
		mk = ConflictSlice
	}
	return attemptResult{resp: &Response{Status: status, Header: jsonHeader(), Body: body},
		reply: fava.Reply{Outcome: fava.Conflict}, conflict: mk}
}

// fileConflict is the answer to a write of file that Fava refused as
// changed externally although favaproxy had just read its checksum: an
// outside writer (one that does not take the ledger lock) wrote in
// between. It asks for a retry, which re-reads the file and re-derives the
// edit; when no attempt is left, the client gets a 409 with the file's
// checksum as it is now.
func (l *Ledger) fileConflict(filePath, file string) attemptResult {
	current := ""
	if text, err := l.readText(file); err == nil {
		current = checksum.String(text)
	}
	res := l.conflict("", fava.ConflictFile, filePath, current)
	res.retry = true
	return res
}

// readText reads a ledger file as Fava reads it (universal newlines) and
// remembers the text as a version of the file.
func (l *Ledger) readText(file string) (string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	text := string(checksum.Normalize(raw))
	l.versions.Add(text)
	return text, nil
}

// appliedFile reports whether file holds exactly want now, and if so the
// success answer to give.
func (l *Ledger) appliedFile(file, want string) (*Response, bool) {
	cur, err := l.readText(file)
	if err != nil || cur != want {
		return nil, false
	}
	return l.success(checksum.String(want), ""), true
}

// sourceFile returns the cleaned path of p if it is one of the ledger's
// files (its main file and includes), else an EInvalid error.
func (l *Ledger) sourceFile(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", favaproxy.FieldErrorf("file_path", "%q is not one of the ledger's files", p)
	}
	p = filepath.Clean(p)
	files, err := l.files(false)
	if err == nil && slices.Contains(files, p) {
		return p, nil
	}
	if files, err = l.files(true); err != nil {
		return "", err
	}
	if slices.Contains(files, p) {
		return p, nil
	}
	return "", favaproxy.FieldErrorf("file_path", "%q is not one of the ledger's files", p)
}

// files returns the ledger's files, refreshing the index first when
// refresh is set.
func (l *Ledger) files(refresh bool) ([]string, error) {
	if refresh {
		if err := l.index.Refresh(); err != nil {
			return nil, fmt.Errorf("read ledger files: %w", favaproxy.Errorf(favaproxy.EInternal, "could not read the ledger's files"))
		}
	}
	return l.index.Ledger().Files, nil
}

// NoteSource remembers the file text of a GET source answer that passed
// through (status, header and whole body as Fava sent them), so that a
// later stale PUT source from that version can be merged; it also learns
// Fava's wire style from it.
func (l *Ledger) NoteSource(status int, header http.Header, body []byte) {
	rep := fava.Classify(status, header, body)
	l.noteStyle(rep.Style)
	l.rememberSource(rep)
}

// rememberSource remembers the text of a successful GET source reply whose
// checksum matches its text.
func (l *Ledger) rememberSource(rep fava.Reply) {
	if rep.Outcome != fava.Success {
		return
	}
	var data sourceBody
	if json.Unmarshal(rep.Data, &data) != nil {
		return
	}
	if checksum.String(data.Source) == data.SHA256 {
		l.versions.Add(data.Source)
	}
}

// SourceLimit is the largest GET source answer NoteSource is given: JSON
// escaping can make it several times the file's size.
func (l *Ledger) SourceLimit() int64 { return 8*l.all.Limits.SourceBody + 1024 }
