package ledger

import "os"

// syncFile makes a file's data durable; Options.Sync replaces it (tests
// record the order of fsyncs and answers).
func syncFile(f *os.File) error { return f.Sync() }
