package proctest

// StartProcess runs bin with args and waits up to 20 s for its "listening"
// line, as Start does, for programs that are not tests (load tools, demos).
// The caller owns the process and must Kill it.
func StartProcess(bin string, args ...string) (*Proc, error) {
	return start(bin, args...)
}
