//go:build !linux && !freebsd

package main

import "syscall"

// lockChildAttr is nil here: these systems have no parent-death signal, so
// if lock is killed, CMD keeps running without the lock.
func lockChildAttr() *syscall.SysProcAttr { return nil }
