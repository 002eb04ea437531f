//go:build linux || freebsd

package main

import "syscall"

// lockChildAttr has the kernel send CMD SIGTERM when the thread that forked
// it exits, which happens at the latest when lock dies, SIGKILL included.
func lockChildAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
