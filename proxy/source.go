package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

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
func (s *Server) putSource(ctx context.Context, wr *writeRequest) (*writeResponse, error) {
	var req sourceBody
	if json.Unmarshal(wr.body, &req) != nil || req.FilePath == "" || req.SHA256 == "" {
		// Not a body favaproxy can reason about: Fava answers it in its
		// own words.
		return s.underLedgerLock(s.forward)(ctx, wr)
	}
	file, err := s.sourceFile(wr.ledger, req.FilePath)
	if err != nil {
		return nil, err
	}
	clientText := string(checksum.Normalize([]byte(req.Source)))
	l := wr.ledger
	wr.touches(file)
	return s.withRetries(ctx, wr, func(ctx context.Context, wr *writeRequest) attemptResult {
		cur, err := s.readText(l, file)
		if err != nil {
			// favaproxy cannot read the file itself: Fava decides.
			return s.sendAttempt(ctx, wr, wr.method, wr.url, wr.body, nil)
		}
		curSum := checksum.String(cur)
		if req.SHA256 == curSum {
			res := s.sendAttempt(ctx, wr, wr.method, wr.url, wr.body, func() (*writeResponse, bool) {
				return s.appliedFile(l, file, clientText, "")
			})
			if res.resp == nil {
				return res
			}
			switch s.outcome(res.resp) {
			case fava.Success:
				l.versions.Add(clientText)
			case fava.Conflict:
				return s.fileConflict(l, req.FilePath, file)
			}
			return res
		}
		base, ok := l.versions.Get(req.SHA256)
		if !ok {
			return s.conflict(l, "", fava.ConflictFile, req.FilePath, curSum)
		}
		merged, ok := merge.ThreeWay(base, cur, clientText)
		if !ok {
			return s.conflict(l, "", fava.ConflictFile, req.FilePath, curSum)
		}
		if merged == cur {
			// The client's change is in the file already.
			return attemptResult{resp: s.success(l, curSum, "", MergedHeader),
				conflict: metricConflictFile, resolved: metricResolutionMerged}
		}
		res := s.putSourceText(ctx, wr, req.FilePath, merged, curSum)
		if res.resp != nil && !res.retry && s.outcome(res.resp) == fava.Success {
			res.resp.header.Set(MergedHeader, "true")
			res.conflict, res.resolved = metricConflictFile, metricResolutionMerged
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
func (s *Server) putSourceText(ctx context.Context, wr *writeRequest, filePath, text, curSum string) attemptResult {
	l := wr.ledger
	body, err := json.Marshal(sourceBody{FilePath: filePath, Source: text, SHA256: curSum})
	if err != nil {
		return attemptResult{err: fmt.Errorf("encode source: %w", err)}
	}
	res := s.sendAttempt(ctx, wr, http.MethodPut, apiURL(wr.url, "source", nil), body, func() (*writeResponse, bool) {
		return s.appliedFile(l, filepath.Clean(filePath), text, "")
	})
	if res.resp == nil {
		return res
	}
	switch s.outcome(res.resp) {
	case fava.Success:
		l.versions.Add(text)
	case fava.Conflict:
		return s.fileConflict(l, filePath, filepath.Clean(filePath))
	}
	return res
}

// sendAttempt sends one request to Fava for an attempt. A dial error asks
// for a retry (the request never reached Fava). Any other failure to get
// an answer, or an answer that is an upstream error (HTML 500, garbage), is
// ambiguous: the write may have happened, so applied, when given, is asked
// whether the file already holds what was asked for; if so its answer is
// the success.
func (s *Server) sendAttempt(ctx context.Context, wr *writeRequest, method string, u *url.URL, body []byte, applied func() (*writeResponse, bool)) attemptResult {
	resp, err := s.send(ctx, wr, method, u, body)
	switch {
	case err != nil && isDialError(err):
		return attemptResult{err: err, retry: true}
	case err != nil:
		if applied != nil {
			if ok, done := applied(); done {
				return attemptResult{resp: ok}
			}
		}
		return attemptResult{err: err}
	}
	rep := s.classify(wr.ledger, resp)
	if rep.Outcome == fava.UpstreamError && resp.status >= 500 && applied != nil {
		if ok, done := applied(); done {
			return attemptResult{resp: ok}
		}
	}
	return attemptResult{resp: resp}
}

// send sends method u with body to Fava on behalf of wr, with wr's
// headers (identity, X-Forwarded-*, request ID) and a JSON content type
// when there is a body of favaproxy's own.
func (s *Server) send(ctx context.Context, wr *writeRequest, method string, u *url.URL, body []byte) (*writeResponse, error) {
	out := *wr
	out.method, out.url, out.body = method, u, body
	out.header = wr.header.Clone()
	if method != wr.method || u != wr.url || !bytes.Equal(body, wr.body) {
		out.header.Del("Content-Type")
		if len(body) > 0 {
			out.header.Set("Content-Type", "application/json")
		}
	}
	resp, err := s.forward(ctx, &out)
	wr.upstreamTime = out.upstreamTime
	if method != http.MethodGet {
		// A write went to Fava (a read, like learnStyle's, is no batch).
		wr.batchSize = max(wr.batchSize, out.batchSize)
	}
	return resp, err
}

// apiURL returns the URL of Fava's API endpoint name of the same ledger as
// the API URL u, with query q.
func apiURL(u *url.URL, name string, q url.Values) *url.URL {
	out := *u
	out.Path = path.Join(path.Dir(u.Path), name)
	out.RawPath = ""
	out.RawQuery = q.Encode()
	return &out
}

// classify classifies Fava's answer and remembers its style for answers
// favaproxy writes itself.
func (s *Server) classify(l *ledger, resp *writeResponse) fava.Reply {
	rep := fava.Classify(resp.status, resp.header, resp.body)
	l.noteStyle(rep.Style)
	return rep
}

// outcome returns the outcome of Fava's answer resp.
func (s *Server) outcome(resp *writeResponse) fava.Outcome {
	return fava.Classify(resp.status, resp.header, resp.body).Outcome
}

// styleOf returns the last wire style seen from l's Fava (StyleUnknown,
// encoded as the newest style, before any).
func styleOf(l *ledger) fava.Style { return fava.Style(l.style.Load()) }

// noteStyle remembers st as the wire style of l's Fava, unless it is
// StyleUnknown.
func (l *ledger) noteStyle(st fava.Style) {
	if st != fava.StyleUnknown {
		l.style.Store(int32(st))
	}
}

// success returns a success answer in l's style with data, plus each of
// flags (header names) set to "true".
func (s *Server) success(l *ledger, data any, mtime string, flags ...string) *writeResponse {
	h := http.Header{"Content-Type": {"application/json"}}
	for _, f := range flags {
		h.Set(f, "true")
	}
	return &writeResponse{status: http.StatusOK, header: h, body: fava.SuccessBody(styleOf(l), data, mtime)}
}

// answerWith replaces the answer of res, when it is Fava's final success
// to a PUT source favaproxy made on the client's behalf, with a success in
// l's style carrying data (what the client's own request is answered with)
// and Fava's mtime, plus each of flags set to "true". Any other res is
// returned as it is.
func (s *Server) answerWith(l *ledger, res attemptResult, data any, flags ...string) attemptResult {
	if res.resp == nil || res.retry {
		return res
	}
	rep := fava.Classify(res.resp.status, res.resp.header, res.resp.body)
	if rep.Outcome != fava.Success {
		return res
	}
	res.resp = s.success(l, data, rep.Mtime, flags...)
	return res
}

// conflict answers a conflict favaproxy could not resolve: 409, Fava's
// message (for filePath when msg is empty) and keys in l's style, and what
// the client needs to reload.
func (s *Server) conflict(l *ledger, msg string, kind fava.ConflictKind, filePath, current string) attemptResult {
	if msg == "" {
		msg = fava.ConflictMessage(filePath)
	}
	status, body := fava.ConflictReply(styleOf(l), msg,
		fava.ConflictInfo{Kind: kind, FilePath: filePath, CurrentSHA256: current})
	mk := metricConflictFile
	if kind == fava.ConflictSlice {
		mk = metricConflictSlice
	}
	return attemptResult{resp: &writeResponse{status: status, header: http.Header{"Content-Type": {"application/json"}}, body: body},
		conflict: mk}
}

// fileConflict is the answer to a write of file that Fava refused as
// changed externally although favaproxy had just read its checksum: an
// outside writer (one that does not take the ledger lock) wrote in
// between. It asks for a retry, which re-reads the file and re-derives the
// edit; when no attempt is left, the client gets a 409 with the file's
// checksum as it is now.
func (s *Server) fileConflict(l *ledger, filePath, file string) attemptResult {
	current := ""
	if text, err := s.readText(l, file); err == nil {
		current = checksum.String(text)
	}
	res := s.conflict(l, "", fava.ConflictFile, filePath, current)
	res.retry = true
	return res
}

// readText reads a ledger file as Fava reads it (universal newlines) and
// remembers the text as a version of the file.
func (s *Server) readText(l *ledger, file string) (string, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	text := string(checksum.Normalize(raw))
	l.versions.Add(text)
	return text, nil
}

// appliedFile reports whether file holds exactly want now, and if so the
// success answer to give, with each of flags set.
func (s *Server) appliedFile(l *ledger, file, want string, mtime string, flags ...string) (*writeResponse, bool) {
	cur, err := s.readText(l, file)
	if err != nil || cur != want {
		return nil, false
	}
	return s.success(l, checksum.String(want), mtime, flags...), true
}

// sourceFile returns the cleaned path of p if it is one of l's files (its
// main file and includes), else an EInvalid error.
func (s *Server) sourceFile(l *ledger, p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", favaproxy.FieldErrorf("file_path", "%q is not one of the ledger's files", p)
	}
	p = filepath.Clean(p)
	files, err := s.ledgerFiles(l, false)
	if err == nil && slices.Contains(files, p) {
		return p, nil
	}
	if files, err = s.ledgerFiles(l, true); err != nil {
		return "", err
	}
	if slices.Contains(files, p) {
		return p, nil
	}
	return "", favaproxy.FieldErrorf("file_path", "%q is not one of the ledger's files", p)
}

// ledgerFiles returns l's files, refreshing the index first when refresh
// is set or the index was never loaded.
func (s *Server) ledgerFiles(l *ledger, refresh bool) ([]string, error) {
	if refresh || len(l.index.Ledger().Files) == 0 {
		if err := l.index.Refresh(); err != nil {
			return nil, fmt.Errorf("read ledger files: %w", favaproxy.Errorf(favaproxy.EInternal, "could not read the ledger's files"))
		}
	}
	return l.index.Ledger().Files, nil
}

// rememberSource records the file text of a GET source answer that passes
// through, so that a later stale PUT source from that version can be
// merged. The body is buffered (it is one small JSON object) and handed on
// unchanged.
func (s *Server) rememberSource(l *ledger, resp *http.Response) error {
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "" {
		return nil
	}
	// JSON escaping can make the answer several times the file's size;
	// past the limit the answer streams on unread and unremembered.
	limit := 8*s.cfg.Limits.SourceBody + 1024
	orig := resp.Body
	b, err := io.ReadAll(io.LimitReader(orig, limit+1))
	if err != nil || int64(len(b)) > limit {
		resp.Body = readCloser{Reader: io.MultiReader(bytes.NewReader(b), orig), Closer: orig}
		return nil
	}
	orig.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	rep := fava.Classify(resp.StatusCode, resp.Header, b)
	l.noteStyle(rep.Style)
	if rep.Outcome != fava.Success {
		return nil
	}
	var data sourceBody
	if json.Unmarshal(rep.Data, &data) != nil {
		return nil
	}
	if checksum.String(data.Source) == data.SHA256 {
		l.versions.Add(data.Source)
	}
	return nil
}

// isSourceRead reports whether a read is Fava's GET source of a ledger,
// and returns the ledger.
func (s *Server) isSourceRead(method, cleanPath string) (*ledger, bool) {
	if method != http.MethodGet || !strings.HasSuffix(cleanPath, "/api/source") {
		return nil, false
	}
	slug, rest, ok := strings.Cut(strings.TrimPrefix(cleanPath, "/"), "/")
	if !ok || rest != "api/source" {
		return nil, false
	}
	l := s.bySlug[slug]
	return l, l != nil
}

// readCloser is a body made of a reader and the closer of another.
type readCloser struct {
	io.Reader
	io.Closer
}
