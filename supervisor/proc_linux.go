//go:build linux

package supervisor

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// sysProcAttr puts the child in its own process group (so a terminal's ^C
// reaches favaproxy only, and Close can stop the child's whole group) and
// has the kernel SIGKILL it when the forking thread — see forker — exits,
// which happens at the latest when favaproxy dies, SIGKILL included.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// awaitExit blocks until the process pid has exited, without reaping it, and
// reports whether it could wait so.
func awaitExit(pid int) bool {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err == nil {
			return true
		}
		if err != unix.EINTR {
			return false
		}
	}
}
