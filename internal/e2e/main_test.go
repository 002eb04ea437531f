// Package e2e holds favaproxy's end-to-end correctness suite: real
// binaries, real processes on loopback, real files, and Beancount's own
// tools as the oracle. The control experiment shows that two Fava
// processes on one ledger lose acknowledged entries; the same load through
// favaproxy must lose, duplicate and invent none.
package e2e

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/favaproxy/favaproxy/internal/proctest"
)

var (
	long     = flag.Bool("long", false, "run the long versions: more writers, entries and kill points")
	raceBins = flag.Bool("race-bins", false, "build the binaries under test with the race detector")
)

// bins are the binaries TestMain built.
var bins struct {
	fakefava  string
	favaproxy string // empty while ./cmd/favaproxy does not exist
}

const module = "github.com/favaproxy/favaproxy"

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := proctest.BinDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	race := *raceBins
	bins.fakefava, err = proctest.Build(dir, module+"/internal/favatest/cmd/fakefava", race)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	has, err := hasProxyCommand()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if has {
		bins.favaproxy, err = proctest.Build(dir, module+"/cmd/favaproxy", race)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return m.Run()
}

// hasProxyCommand reports whether ./cmd/favaproxy exists in the tree.
func hasProxyCommand() (bool, error) {
	root, err := moduleRoot()
	if err != nil {
		return false, err
	}
	fi, err := os.Stat(filepath.Join(root, "cmd", "favaproxy"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	}
	return fi.IsDir(), nil
}

// moduleRoot walks up from the working directory to the go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("e2e: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// requireProxy skips tb while the favaproxy command is not in the tree.
func requireProxy(tb testing.TB) {
	tb.Helper()
	if bins.favaproxy == "" {
		tb.Skip("./cmd/favaproxy does not exist yet")
	}
}
