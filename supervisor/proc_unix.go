//go:build unix

package supervisor

import (
	"os"
	"syscall"
)

var stopSignal os.Signal = syscall.SIGTERM

// signalGroup sends sig to the process group that p leads. A process that
// already exited and whose group is empty is not an error.
func signalGroup(p *os.Process, sig os.Signal) {
	if s, ok := sig.(syscall.Signal); ok {
		_ = syscall.Kill(-p.Pid, s)
		return
	}
	_ = p.Signal(sig)
}

// killGroup sends SIGKILL to the process group that p leads, reaching
// grandchildren left behind by an exited child too. The group's ID cannot be
// reused while any member lives.
func killGroup(p *os.Process) { _ = syscall.Kill(-p.Pid, syscall.SIGKILL) }
