package beancount

import "fmt"

// ScanCounts reports how many files the index has scanned in full and how
// many it has scanned only from an append.
func (ix *Index) ScanCounts() (full, appended int64) {
	return ix.fullScans.Load(), ix.appendScans.Load()
}

// ScanSplit scans src in two parts, the second from split, as large files
// are scanned, or in one part if split <= 0; joined reports whether the two
// parts were used. state sums up what, besides the blocks, an index keeps
// of a scan's end.
func ScanSplit(src []byte, split int) (blocks []Block, state string, joined bool) {
	s, joined := scanSplit(src, string(src), split)
	return s.blocks, fmt.Sprintf("p=%d line=%d tags=%q prev=%q@%d unterminated=%v",
		s.p, s.ln, s.tags, s.prevTags, s.prevTagsBlock, s.noClose >= 0), joined
}
