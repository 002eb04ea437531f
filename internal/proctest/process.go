package proctest

// StartProcess runs bin with args and waits up to 20 s for its "listening"
// line, as Start does, for programs that are not tests (load tools, demos).
// The caller owns the process and must Kill it.
func StartProcess(bin string, args ...string) (*Proc, error) {
	return start(nil, bin, args...)
}

// StartProcessEnv is StartProcess with env (KEY=VALUE) added to the
// environment the process inherits.
func StartProcessEnv(env []string, bin string, args ...string) (*Proc, error) {
	return start(env, bin, args...)
}
