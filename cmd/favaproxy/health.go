package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newHealthCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "health [--url URL] [--timeout D]",
		Short: "Probe a running favaproxy's /readyz: exit 0 when ready, 1 with the reason otherwise",
		Long: `health GETs <URL>/readyz and exits 0 on 200. Otherwise it prints one line
saying why and exits 1. It needs no shell, for Docker's
HEALTHCHECK CMD ["/favaproxy", "health"].

Without --url the address is the configured listen address (same config file
and FAVAPROXY_* variables as serve); a 0.0.0.0 or [::] host is probed on
127.0.0.1 or [::1]. The default --timeout (10s) outlasts the proxy's own 5s
bound on probing Fava, so a hanging Fava is reported as such.`,
		Args: usageArgs(cobra.NoArgs),
	}
	url := cmd.Flags().String("url", "", "base URL of the proxy (default: from the configured listen address)")
	timeout := cmd.Flags().Duration("timeout", 10*time.Second, "give up after this long")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		base := *url
		if base == "" {
			cfg, err := loadConfig(nil, configFile(cmd))
			if err != nil {
				return err
			}
			if base, err = probeURL(cfg.Listen); err != nil {
				return err
			}
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), *timeout)
		defer cancel()
		if err := probe(ctx, strings.TrimSuffix(base, "/")+"/readyz"); err != nil {
			return &exitError{code: exitFailure, msg: "not ready: " + err.Error()}
		}
		fmt.Fprintln(cmd.OutOrStdout(), "ready")
		return nil
	}
	return cmd
}

// probeURL returns the base URL that reaches a server listening on listen:
// an unspecified host (empty, 0.0.0.0, ::) becomes the loopback address of
// its family.
func probeURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// probe GETs url and returns nil on 200, else why not in one line.
func probe(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// No environment proxy, no keep-alive, no redirects: ask this server.
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("GET %s: no answer in time", url)
		}
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	msg := fmt.Sprintf("GET %s: %s", url, resp.Status)
	if r := reason(body); r != "" {
		msg += ": " + r
	}
	return errors.New(msg)
}

// reason extracts a one-line reason from a /readyz body: the "error",
// "reason" or "message" string of a JSON object, else the failed entries of
// its "checks" object, else the compacted JSON,
// else the body's first line; at most 300 bytes.
func reason(body []byte) string {
	var s string
	var obj map[string]any
	if json.Unmarshal(body, &obj) == nil {
		for _, k := range []string{"error", "reason", "message"} {
			if v, ok := obj[k].(string); ok && v != "" {
				s = v
				break
			}
		}
		if checks, ok := obj["checks"].(map[string]any); ok && s == "" {
			// favaproxy's /readyz: {"status": …, "checks": {name: "ok" or why}}
			var failed []string
			for k, v := range checks {
				if v != "ok" {
					failed = append(failed, fmt.Sprintf("%s: %v", k, v))
				}
			}
			slices.Sort(failed)
			s = strings.Join(failed, "; ")
		}
		if s == "" {
			b, _ := json.Marshal(obj) // one line, keys sorted
			s = string(b)
		}
	} else {
		s, _, _ = strings.Cut(strings.TrimSpace(string(body)), "\n")
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
