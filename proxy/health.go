package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/labstack/echo/v5"
)

// readyTimeout bounds each readiness probe of Fava.
const readyTimeout = 5 * time.Second

// livez answers 200 while the process serves.
func (s *Server) livez(c *echo.Context) error {
	writeJSON(c.Response(), http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// readyz answers 200 when Fava answers (any status below 500 on GET of its
// root), every ledger file is readable and every ledger lock can be taken
// (its Check, for Lockers that have one); 503 otherwise. The body names
// every check and what failed.
func (s *Server) readyz(c *echo.Context) error {
	checks := s.checks(c.Request().Context())
	status, word := http.StatusOK, "ok"
	for _, v := range checks {
		if v != "ok" {
			status, word = http.StatusServiceUnavailable, "unavailable"
		}
	}
	writeJSON(c.Response(), status, map[string]any{"status": word, "checks": checks})
	return nil
}

// checks runs the readiness checks concurrently and returns "ok" or the
// failure of each, keyed "upstream" and "ledger:<slug>".
func (s *Server) checks(ctx context.Context) map[string]string {
	var (
		mu  sync.Mutex
		out = make(map[string]string, 1+len(s.ledgers))
		wg  sync.WaitGroup
	)
	set := func(k string, err error) {
		mu.Lock()
		defer mu.Unlock()
		out[k] = "ok"
		if err != nil {
			out[k] = err.Error()
		}
	}
	wg.Go(func() { set("upstream", s.checkUpstream(ctx)) })
	for _, l := range s.ledgers {
		wg.Go(func() { set("ledger:"+l.slug, checkLedger(l)) })
	}
	for name, check := range s.readyChecks {
		wg.Go(func() { set(name, check(ctx)) })
	}
	wg.Wait()
	return out
}

// checkUpstream gets Fava's root and wants any status below 500.
func (s *Server) checkUpstream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	u := *s.upstream
	u.Path, u.RawPath = s.prefix+"/", s.prefixEsc+"/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := s.transport.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("fava unreachable: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("fava answered %s", resp.Status)
	}
	return nil
}

// checkLedger opens the ledger file for reading and checks its lock.
func checkLedger(l *ledger) error {
	f, err := os.Open(l.cfg.File)
	if err != nil {
		return fmt.Errorf("ledger file: %w", err)
	}
	f.Close()
	if c, ok := l.lock.(checker); ok {
		if err := c.Check(); err != nil {
			return fmt.Errorf("ledger lock: %w", err)
		}
	}
	return nil
}
