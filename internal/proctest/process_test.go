package proctest

import "testing"

func TestStartProcessFindsListeningAddr(t *testing.T) {
	p, err := StartProcess(listeningScript(t, "msg=listening addr=127.0.0.1:4243"))
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
