//go:build !unix

package supervisor

import (
	"os"
	"syscall"
)

// Without Unix signals the child can only be killed, and a killed
// favaproxy leaves it running.
var stopSignal os.Signal = os.Kill

func sysProcAttr() *syscall.SysProcAttr { return nil }

func signalGroup(p *os.Process, sig os.Signal) {
	if err := p.Signal(sig); err != nil {
		_ = p.Kill()
	}
}

func killGroup(p *os.Process) { _ = p.Kill() }

func awaitExit(int) bool { return false }
