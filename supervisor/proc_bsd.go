//go:build unix && !linux

package supervisor

import "syscall"

// sysProcAttr puts the child in its own process group. No parent-death
// signal is set here (macOS and most BSDs have none; FreeBSD's is not used):
// if favaproxy is killed with SIGKILL, the child keeps running (Close and
// context cancellation still stop it).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// awaitExit cannot wait without reaping here; the child's group is not swept
// after it exits.
func awaitExit(int) bool { return false }
