package proctest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// listeningScript writes a shell script that prints line, as a server logs
// its address, and then sleeps.
func listeningScript(tb testing.TB, line string) string {
	tb.Helper()
	script := filepath.Join(tb.TempDir(), "fake.sh")
	body := "#!/bin/sh\necho '" + line + "'\nexec sleep 30\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		tb.Fatal(err)
	}
	return script
}

func TestStartFindsListeningAddr(t *testing.T) {
	p := Start(t, listeningScript(t, "time=x level=INFO msg=listening addr=127.0.0.1:4242"))
	if got, want := p.Addr, "127.0.0.1:4242"; got != want {
		t.Fatalf("Addr=%q, want %q", got, want)
	}
	p.Kill()
	if !p.Exited() {
		t.Fatal("process still running after Kill")
	}
}

func TestStartReportsEarlyExit(t *testing.T) {
	_, err := start(nil, "/bin/sh", "-c", "echo boom; exit 3")
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err=%v, want exit report with output", err)
	}
}
