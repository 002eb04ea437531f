package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// version is set at build time with
// -ldflags "-X main.version=v1.2.3"; empty means take it from the build info.
var version = ""

// versionString returns favaproxy's version: the ldflags value, else the
// module version and VCS revision recorded by the Go toolchain.
func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v == "" {
			v = bi.Main.Version
		}
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = "+dirty"
				}
			}
		}
		if rev != "" && version == "" {
			if len(rev) > 12 {
				rev = rev[:12]
			}
			v += " " + rev + modified
		}
	}
	if v == "" {
		v = "(devel)"
	}
	return fmt.Sprintf("favaproxy %s %s", v, runtime.Version())
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print favaproxy's version",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), versionString())
			return err
		},
	}
}
