package deploy_test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// unit is a systemd unit file: section → key → values, in file order.
type unit map[string]map[string][]string

func readUnit(tb testing.TB, name string) unit {
	tb.Helper()
	f, err := os.Open(name)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				tb.Fatalf("%s: cannot parse %q", name, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return u
}

func (u unit) get(section, key string) string {
	vs := u[section][key]
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

func units(tb testing.TB) []string {
	tb.Helper()
	files, err := filepath.Glob("systemd/*.service")
	if err != nil {
		tb.Fatal(err)
	}
	if len(files) != 2 {
		tb.Fatalf("want favaproxy.service and fava.service, have %v", files)
	}
	return files
}

func TestSystemdUnits(t *testing.T) {
	proxy, fava := readUnit(t, "systemd/favaproxy.service"), readUnit(t, "systemd/fava.service")

	t.Run("Sandbox", func(t *testing.T) {
		for name, u := range map[string]unit{"favaproxy": proxy, "fava": fava} {
			for key, want := range map[string]string{
				"ProtectSystem":           "strict",
				"ReadWritePaths":          "/var/lib/ledger",
				"NoNewPrivileges":         "yes",
				"PrivateTmp":              "yes",
				"ProtectHome":             "yes",
				"CapabilityBoundingSet":   "",
				"RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
			} {
				if vs, ok := u["Service"][key]; !ok || vs[0] != want {
					t.Errorf("%s.service: %s=%q, want %q", name, key, vs, want)
				}
			}
			if u.get("Service", "User") == "" || u.get("Service", "DynamicUser") == "yes" {
				t.Errorf("%s.service: want a fixed User= that can share the ledger directory", name)
			}
			if got, want := u.get("Service", "Group"), "ledger"; got != want {
				t.Errorf("%s.service: Group=%q, want %q", name, got, want)
			}
		}
		if got, want := proxy.get("Service", "ExecStart"), "/usr/local/bin/favaproxy serve --config /etc/favaproxy/config.yaml"; got != want {
			t.Errorf("favaproxy.service: ExecStart=%q, want %q", got, want)
		}
	})
	t.Run("FavaBehindFavaproxy", func(t *testing.T) {
		env := strings.Fields(strings.Join(fava["Service"]["Environment"], " "))
		if !slices.Contains(env, "FAVA_HOST=127.0.0.1") {
			t.Errorf("fava.service Environment=%q, want FAVA_HOST=127.0.0.1", env)
		}
		if !slices.Contains(strings.Fields(fava.get("Unit", "PartOf")), "favaproxy.service") &&
			!slices.Contains(strings.Fields(fava.get("Unit", "BindsTo")), "favaproxy.service") {
			t.Error("fava.service is neither PartOf= nor BindsTo= favaproxy.service: it would outlive it")
		}
		// favaproxy stops first, so writes already forwarded reach Fava.
		if !slices.Contains(strings.Fields(proxy.get("Unit", "After")), "fava.service") {
			t.Error("favaproxy.service is not After=fava.service: Fava would stop before favaproxy drains")
		}
		cfg := decodeConfigFile(t, "config.example.yaml")
		argv := strings.Fields(fava.get("Service", "ExecStart"))
		for _, l := range cfg.Ledgers {
			if !slices.Contains(argv, l.File) {
				t.Errorf("fava.service serves %q; the example config's ledger is %s", argv[1:], l.File)
			}
			if !strings.HasPrefix(l.File, proxy.get("Service", "ReadWritePaths")+"/") {
				t.Errorf("ledger %s is outside ReadWritePaths", l.File)
			}
		}
	})
	t.Run("Verify", func(t *testing.T) {
		tool := lookTool(t, "systemd-analyze")
		dir := t.TempDir()
		// verify insists that ExecStart= exists; the binaries are not
		// installed here, so verify copies that run /bin/true instead.
		execStart := regexp.MustCompile(`(?m)^ExecStart=\S+`)
		var paths []string
		for _, f := range units(t) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, filepath.Base(f))
			if err := os.WriteFile(p, execStart.ReplaceAll(b, []byte("ExecStart=/bin/true")), 0o644); err != nil {
				t.Fatal(err)
			}
			paths = append(paths, p)
		}
		out, err := exec.Command(tool, append([]string{"verify"}, paths...)...).CombinedOutput()
		// verify exits 0 on unknown keys and bad values, but says so.
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
		for _, p := range paths {
			// Exposure 0–10 is given to --threshold as 0–100.
			out, err := exec.Command(tool, "security", "--offline=true", "--threshold=25", "--no-pager", p).CombinedOutput()
			if bytes.Contains(out, []byte("unrecognized option")) {
				t.Logf("systemd-analyze security --offline unsupported here: %s", out)
				break
			}
			if err != nil {
				t.Errorf("systemd-analyze security %s: exposure above 2.5 (%v)\n%s", filepath.Base(p), err, out)
			}
		}
	})
	t.Run("SysusersAndTmpfiles", func(t *testing.T) {
		users, err := os.ReadFile("systemd/favaproxy.sysusers")
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range []unit{proxy, fava} {
			user := u.get("Service", "User")
			if !regexp.MustCompile(`(?m)^m\s+` + regexp.QuoteMeta(user) + `\s+ledger\s*$`).Match(users) {
				t.Errorf("favaproxy.sysusers does not put %s in group ledger", user)
			}
		}
		tmp, err := os.ReadFile("systemd/favaproxy.tmpfiles")
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^d\s+/var/lib/ledger\s+2770\s+\S+\s+ledger\b`).Match(tmp) {
			t.Errorf("favaproxy.tmpfiles does not create /var/lib/ledger 2770 group ledger:\n%s", tmp)
		}
	})
}

// lookTool finds a command, skipping the test without it unless CI is set.
func lookTool(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("%s not installed: %v", name, err)
		}
		tb.Skipf("%s not installed", name)
	}
	return p
}
