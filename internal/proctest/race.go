//go:build race

package proctest

func init() { RaceEnabled = true }
