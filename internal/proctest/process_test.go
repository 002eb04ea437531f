package proctest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStartProcessFindsListeningAddr(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "fake.sh")
	body := "#!/bin/sh\necho 'msg=listening addr=127.0.0.1:4243'\nexec sleep 30\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := StartProcess(script)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Kill()
	if got, want := p.Addr, "127.0.0.1:4243"; got != want {
		t.Fatalf("Addr=%q, want %q", got, want)
	}
	p.Kill()
	if !p.Exited() {
		t.Fatal("process still running after Kill")
	}
}
