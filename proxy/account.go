package proxy

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/fava"
)

// accountData is the data of favaproxy's answer to add_account (in the
// upstream's wire style): Message is "Opened <account>." or "<account> is
// already open."; FilePath and SHA256 are the file written and its new
// checksum, empty when nothing was written.
type accountData struct {
	Account  string `json:"account"`
	Existing bool   `json:"existing"`
	FilePath string `json:"file_path,omitempty"`
	Message  string `json:"message"`
	SHA256   string `json:"sha256sum,omitempty"`
}

// addAccount handles favaproxy's own PUT /<slug>/api/add_account, which
// Fava does not have: it opens an account unless some file of the ledger
// already opens it. The request is parsed and checked against Beancount's
// grammar before any lock (400 otherwise). Under the ledger lock favaproxy
// re-reads the ledger; an account already opened is answered 200 with
// existing true and nothing written; otherwise an open directive is
// inserted after the last open of the accounts file (ledgers.accounts_file,
// default the main file), or appended to it when it has none, and written
// with PUT source and the file's current checksum. When an outside writer
// changed the file in between, the write is re-derived from the new text
// after a backoff wait without the lock.
func (s *Server) addAccount(ctx context.Context, wr *writeRequest) (*writeResponse, error) {
	a, err := fava.ParseAddAccount(wr.body)
	if err != nil {
		return nil, err
	}
	l := wr.ledger
	_, _ = s.ledgerFiles(l, false)
	if err := a.Validate(fava.Rules{Roots: ledgerRoots(l.index.Ledger().Options)}); err != nil {
		return nil, err
	}
	target := l.cfg.AccountsFile
	if target == "" {
		target = l.cfg.File
	}
	if abs, err := filepath.Abs(target); err == nil {
		target = abs
	}
	wr.touches(target)
	today := time.Now().Format(time.DateOnly)
	return s.withRetries(ctx, wr, func(ctx context.Context, wr *writeRequest) attemptResult {
		if _, err := s.ledgerFiles(l, true); err != nil {
			return attemptResult{err: err}
		}
		text, err := s.readText(l, target)
		if err != nil {
			return attemptResult{err: err}
		}
		if l.index.Opened(a.Account) || opens(text, a.Account) {
			return attemptResult{resp: s.success(l, accountData{Account: a.Account, Existing: true,
				Message: a.Account + " is already open."}, "")}
		}
		block := fava.RenderOpen(a, today)
		var out string
		if last := lastOpen(text); last > 0 {
			out = beancount.InsertAfter(text, last, block)
		} else {
			out = beancount.AppendBlock(text, block)
		}
		res := s.putSourceText(ctx, wr, target, out, checksum.String(text))
		return s.answerWith(l, res, accountData{Account: a.Account, FilePath: target,
			Message: "Opened " + a.Account + ".", SHA256: checksum.String(out)})
	})
}

// learnStyle asks Fava for file (a read that changes nothing), so that
// answers favaproxy writes itself are in Fava's wire style; the text is
// remembered as a version too.
func (s *Server) learnStyle(ctx context.Context, wr *writeRequest, file string) {
	resp, err := s.send(ctx, wr, http.MethodGet, apiURL(wr.url, "source", map[string][]string{"filename": {file}}), nil)
	if err != nil {
		return
	}
	rep := s.classify(wr.ledger, resp)
	var data sourceBody
	if rep.Outcome == fava.Success && json.Unmarshal(rep.Data, &data) == nil && checksum.String(data.Source) == data.SHA256 {
		wr.ledger.versions.Add(data.Source)
	}
}

// opens reports whether text has an open directive of account.
func opens(text, account string) bool {
	for _, b := range beancount.Scan([]byte(text)) {
		if b.Kind == beancount.KindOpen && slices.Contains(b.Accounts, account) {
			return true
		}
	}
	return false
}

// lastOpen returns the last line of the last open directive of text (as
// Beancount reads it, so that a multi-line string is never split), or 0.
func lastOpen(text string) int {
	last := 0
	for _, b := range beancount.Scan([]byte(text)) {
		if b.Kind == beancount.KindOpen {
			last = max(last, b.EndLine, b.LastLine)
		}
	}
	return last
}

// ledgerRoots returns the ledger's root account names from its name_*
// options (the last of each, empty ones ignored), or nil for Beancount's
// defaults: when the ledger sets none, or sets names that are no valid root
// (Beancount refuses such a ledger; its accounts are checked as usual).
func ledgerRoots(opts map[string][]string) []string {
	roots := slices.Clone(fava.DefaultRoots)
	changed := false
	for i, name := range []string{"name_assets", "name_liabilities", "name_equity", "name_income", "name_expenses"} {
		if v := opts[name]; len(v) > 0 && v[len(v)-1] != "" {
			roots[i], changed = v[len(v)-1], true
		}
	}
	if !changed || (fava.Rules{Roots: roots}).Validate() != nil {
		return nil
	}
	return roots
}
