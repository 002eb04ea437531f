// Package durable writes files so that they survive a crash: data and
// directory entries fsynced, replacements atomic. Every function takes the
// sync to use (normally (*os.File).Sync), so that tests can record or fail
// fsyncs.
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// SyncPath opens path and fsyncs it with sync. fsync through any
// descriptor of a file flushes its data, so a file another process wrote in
// place is made durable so.
func SyncPath(path string, sync func(*os.File) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := sync(f); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return nil
}

// SyncDir makes the entries of dir (a rename, a new or removed file)
// durable.
func SyncDir(dir string, sync func(*os.File) error) error {
	return SyncPath(dir, sync)
}

// RealPath returns path with its symlinks resolved, so that a write
// replaces the file a symlink points to, not the link. A path that does
// not exist (yet) is returned cleaned.
func RealPath(path string) string {
	if r, err := filepath.EvalSymlinks(path); err == nil {
		return r
	}
	return filepath.Clean(path)
}

// ReplaceFile replaces path (symlinks followed) by data: a temporary
// file in the same directory is written, given the old file's mode and
// owner, fsynced and renamed over it, and the directory is fsynced. A
// reader sees the old or the new file, never a part.
func ReplaceFile(path string, data []byte, sync func(*os.File) error) error {
	path = RealPath(path)
	dir, base := filepath.Split(path)
	mode := fs.FileMode(0o644)
	uid, gid := -1, -1
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	}
	tmp, err := os.CreateTemp(dir, "."+base+".favaproxy-*")
	if err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if uid >= 0 {
		// Keeping the owner needs the right to give files away; without it
		// the file keeps favaproxy's user, which the mode still serves.
		if err := tmp.Chown(uid, gid); err != nil && !errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("replace %s: %w", path, err)
		}
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if err := sync(tmp); err != nil {
		return fmt.Errorf("replace %s: fsync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	done = true
	return SyncDir(dir, sync)
}

// WriteFile creates (or truncates) path with data and fsyncs it; its
// directory entry is made durable by the caller.
func WriteFile(path string, data []byte, mode fs.FileMode, sync func(*os.File) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := sync(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
