package beancount

// ScanCounts reports how many files the index has scanned in full and how
// many it has scanned only from an append.
func (ix *Index) ScanCounts() (full, appended int64) {
	return ix.fullScans.Load(), ix.appendScans.Load()
}
