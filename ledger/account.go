package ledger

import (
	"context"
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
func (l *Ledger) addAccount(ctx context.Context, req *Request) (*Response, error) {
	a, err := fava.ParseAddAccount(req.Body)
	if err != nil {
		return nil, err
	}
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
	req.touches(target)
	today := time.Now().Format(time.DateOnly)
	return l.withRetries(ctx, req, func(ctx context.Context, req *Request) attemptResult {
		if _, err := l.files(true); err != nil {
			return attemptResult{err: err}
		}
		text, err := l.readText(target)
		if err != nil {
			return attemptResult{err: err}
		}
		if l.index.Opened(a.Account) || opens(text, a.Account) {
			return attemptResult{resp: l.success(accountData{Account: a.Account, Existing: true,
				Message: a.Account + " is already open."}, ""), reply: fava.Reply{Outcome: fava.Success}}
		}
		block := fava.RenderOpen(a, today)
		var out string
		if last := lastOpen(text); last > 0 {
			out = beancount.InsertAfter(text, last, block)
		} else {
			out = beancount.AppendBlock(text, block)
		}
		res := l.putSourceText(ctx, req, target, out, checksum.String(text))
		return l.answerWith(res, accountData{Account: a.Account, FilePath: target,
			Message: "Opened " + a.Account + ".", SHA256: checksum.String(out)})
	})
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
