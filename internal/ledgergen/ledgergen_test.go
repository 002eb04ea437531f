package ledgergen

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestWriteIsDeterministic(t *testing.T) {
	var a, b bytes.Buffer
	o := Options{Title: "Gen", Transactions: 300, Seed: 7}
	if err := Write(&a, o); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, o); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("same options gave different ledgers")
	}
	o.Seed = 8
	var c bytes.Buffer
	if err := Write(&c, o); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Fatal("different seeds gave the same ledger")
	}
}

// TestFilePassesBeanCheck uses Beancount itself as the oracle.
func TestFilePassesBeanCheck(t *testing.T) {
	if _, err := exec.LookPath("bean-check"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("bean-check not installed")
		}
		t.Skip("bean-check not installed")
	}
	for _, n := range []int{0, 1, 15, 1200} {
		path := filepath.Join(t.TempDir(), "gen.beancount")
		if err := File(path, Options{Title: "Gen", Transactions: n, Seed: uint64(n)}); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("bean-check", path).CombinedOutput(); err != nil {
			t.Fatalf("n=%d: bean-check: %v\n%s", n, err, out)
		}
	}
}
