package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/config"
)

// Recover settles a write that a crash interrupted, for a ledger that no
// server of this process has open (`favaproxy recover`, `favaproxy lock`):
// when a rollback is hot it takes lk exclusively, waiting while ctx lasts,
// and settles it as a writer would (see rollback.go). A rollback whose
// request may still be running at Fava is left alone, with an error that
// says until when.
func Recover(ctx context.Context, all config.Config, cfg config.Ledger, lk Locker, log *slog.Logger) (Recovery, error) {
	rb := &rollbacks{dir: rollbackDir(cfg.StatePath(), cfg.File), sync: syncFile}
	if m, err := rb.hot(); err != nil || m == nil {
		return Recovery{}, err
	}
	l, err := openState(all, cfg, Options{Locker: lk, Logger: log})
	if err != nil {
		return Recovery{}, err
	}
	defer l.journal.Close()
	release, err := lk.Lock(ctx)
	if err != nil {
		return Recovery{}, fmt.Errorf("lock to recover: %w", err)
	}
	defer release()
	rec, err := l.recoverHot(ctx)
	var still *errStillRunning
	if errors.As(err, &still) {
		return rec, fmt.Errorf("%w; run recover again after that", err)
	}
	return rec, err
}

// Problem is something Verify found wrong with a ledger.
type Problem struct {
	File string `json:"file"`
	Line int    `json:"line,omitempty"`
	What string `json:"what"`
}

// Verify checks a ledger without changing it: every file of it can be
// read and scanned without a line Beancount would reject, and no write is
// left interrupted (a hot rollback). It returns what it found wrong.
func Verify(cfg config.Ledger, metaKey string) ([]Problem, error) {
	var out []Problem
	ix := beancount.NewIndex(cfg.File, beancount.IndexOptions{MetaKey: metaKey})
	if err := ix.Refresh(); err != nil {
		return nil, fmt.Errorf("read ledger: %w", err)
	}
	for _, f := range ix.Ledger().Files {
		src, err := os.ReadFile(f)
		if err != nil {
			out = append(out, Problem{File: f, What: err.Error()})
			continue
		}
		for _, b := range beancount.Scan(src) {
			if b.Kind == beancount.KindUnknown {
				out = append(out, Problem{File: f, Line: b.Line, What: "a line Beancount would reject"})
			}
		}
	}
	rb := &rollbacks{dir: rollbackDir(cfg.StatePath(), cfg.File)}
	m, err := rb.hot()
	switch {
	case err != nil:
		out = append(out, Problem{File: rb.manifestPath(), What: err.Error()})
	case m != nil:
		out = append(out, Problem{File: rb.manifestPath(),
			What: fmt.Sprintf("a %s write begun %s by process %d is not settled; run favaproxy recover", m.Kind, m.Started.Format("2006-01-02T15:04:05Z07:00"), m.PID)})
	}
	return out, nil
}
