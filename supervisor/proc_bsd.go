//go:build unix && !linux

package supervisor

import "syscall"

// sysProcAttr puts the child in its own process group. These systems have no
// parent-death signal: if favaproxy is killed with SIGKILL, the child keeps
// running (Close and context cancellation still stop it).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// awaitExit cannot wait without reaping here; the child's group is not swept
// after it exits.
func awaitExit(int) bool { return false }
