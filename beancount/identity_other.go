//go:build !unix

package beancount

import "os"

func identityOf(fi os.FileInfo) identity {
	return identity{size: fi.Size(), mtime: fi.ModTime()}
}
