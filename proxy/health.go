package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v5"
)

// readyTimeout bounds each readiness probe of Fava.
const readyTimeout = 5 * time.Second

// errFavaStatus is a readiness probe that Fava answered with a 5xx.
var errFavaStatus = errors.New("fava answered")

// livez answers 200 while the process serves.
func (s *Server) livez(c *echo.Context) error {
	writeJSON(c.Response(), http.StatusOK, map[string]string{"status": "ok"})
	return nil
}

// readyz answers 200 when Fava answers (any status below 500 on GET of its
// root) and every ledger can be written (Ledger.Check: its file readable,
// its lock usable, its journal writable); 503 otherwise. The body names
// every check and, for a failed one, a short reason; the details, which
// may name files, go to the log only, since /readyz is not authenticated.
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

// checks runs the readiness checks concurrently and returns "ok" or a
// short reason for each, keyed "upstream" and "ledger:<slug>".
func (s *Server) checks(ctx context.Context) map[string]string {
	var (
		mu  sync.Mutex
		out = make(map[string]string, 1+len(s.ledgers))
		wg  sync.WaitGroup
	)
	set := func(k, reason string, err error) {
		mu.Lock()
		defer mu.Unlock()
		out[k] = "ok"
		if err != nil {
			out[k] = reason
			s.log.Warn("not ready", "check", k, "err", err.Error())
		}
	}
	wg.Go(func() {
		err := s.checkUpstream(ctx)
		set("upstream", favaReason(err), err)
	})
	for _, l := range s.ledgers {
		wg.Go(func() { set("ledger:"+l.Slug(), "ledger unavailable", l.Check()) })
		wg.Go(func() {
			set("lock:"+l.Slug(), "lock backend "+s.cfg.Lock.Backend+" unavailable", l.CheckLock())
		})
	}
	for name, check := range s.readyChecks {
		wg.Go(func() { set(name, name+" failed", check(ctx)) })
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
		return fmt.Errorf("%w: %s", errFavaStatus, resp.Status)
	}
	return nil
}

// favaReason is the short reason of a failed upstream check.
func favaReason(err error) string {
	if errors.Is(err, errFavaStatus) {
		return "fava answered an error"
	}
	return "fava unreachable"
}
