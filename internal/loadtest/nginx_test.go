package loadtest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

// needTool returns the path of a tool the test needs: missing, it skips the
// test, or fails it under CI.
func needTool(tb testing.TB, name string, fallbacks ...string) string {
	tb.Helper()
	p := lookPath("", name, fallbacks...)
	if p == "" {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s not found; CI installs it", name)
		}
		tb.Skipf("%s not found", name)
	}
	return p
}

func TestNginxProxiesWithKeepalive(t *testing.T) {
	bin := needTool(t, "nginx", "/usr/sbin/nginx")
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello "+r.URL.Path+" via "+r.Header.Get("X-Forwarded-For"))
	}))
	defer up.Close()
	ng, err := startNginx(context.Background(), bin, t.TempDir(), strings.TrimPrefix(up.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer ng.stop()
	resp, err := http.Get(ng.url() + "/slug/income_statement/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if got, want := string(body), "hello /slug/income_statement/ via 127.0.0.1"; got != want {
		t.Fatalf("body=%q, want %q", got, want)
	}
	ng.stop()
	select {
	case <-ng.done:
	default:
		t.Fatal("nginx still running after stop")
	}
}
