package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/favaproxy/favaproxy/config"
)

// load parses args as serve's flags and loads the configuration with file
// (if not empty) as its YAML file.
func load(tb testing.TB, yaml string, args ...string) (config.Config, error) {
	tb.Helper()
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addConfigFlags(fs)
	if err := fs.Parse(args); err != nil {
		tb.Fatalf("parse %q: %v", args, err)
	}
	file := ""
	if yaml != "" {
		file = filepath.Join(tb.TempDir(), "favaproxy.yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return loadConfig(fs, file)
}

func mustLoad(tb testing.TB, yaml string, args ...string) config.Config {
	tb.Helper()
	cfg, err := load(tb, yaml, args...)
	if err != nil {
		tb.Fatalf("load: %v", err)
	}
	return cfg
}

func TestConfigDefaults(t *testing.T) {
	if got, want := mustLoad(t, ""), config.Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("nothing set:\n got %+v\nwant %+v", got, want)
	}
}

func TestConfigPrecedence(t *testing.T) {
	const file = "listen: 127.0.0.1:1001\nlog:\n  level: warn\n"
	t.Run("FileOverDefault", func(t *testing.T) {
		cfg := mustLoad(t, file)
		if got, want := cfg.Listen, "127.0.0.1:1001"; got != want {
			t.Errorf("listen = %q, want %q", got, want)
		}
		if got, want := cfg.Log.Level, "warn"; got != want {
			t.Errorf("log.level = %q, want %q", got, want)
		}
		if got, want := cfg.Log.Format, "text"; got != want {
			t.Errorf("log.format = %q, want default %q", got, want)
		}
	})
	t.Run("EnvOverFile", func(t *testing.T) {
		t.Setenv("FAVAPROXY_LISTEN", "127.0.0.1:1002")
		cfg := mustLoad(t, file)
		if got, want := cfg.Listen, "127.0.0.1:1002"; got != want {
			t.Errorf("listen = %q, want %q", got, want)
		}
		if got, want := cfg.Log.Level, "warn"; got != want {
			t.Errorf("log.level = %q, want %q from the file", got, want)
		}
	})
	t.Run("FlagOverEnv", func(t *testing.T) {
		t.Setenv("FAVAPROXY_LISTEN", "127.0.0.1:1002")
		t.Setenv("FAVAPROXY_LOG_LEVEL", "error")
		cfg := mustLoad(t, file, "--listen", "127.0.0.1:1003")
		if got, want := cfg.Listen, "127.0.0.1:1003"; got != want {
			t.Errorf("listen = %q, want %q", got, want)
		}
		if got, want := cfg.Log.Level, "error"; got != want {
			t.Errorf("log.level = %q, want %q from env", got, want)
		}
	})
	t.Run("UnsetFlagDoesNotOverride", func(t *testing.T) {
		// A flag's default must not beat the file.
		cfg := mustLoad(t, file, "--upstream", "http://127.0.0.1:9")
		if got, want := cfg.Listen, "127.0.0.1:1001"; got != want {
			t.Errorf("listen = %q, want %q", got, want)
		}
	})
	t.Run("EveryFlag", func(t *testing.T) {
		cfg := mustLoad(t, file,
			"--upstream", "http://127.0.0.1:9/fava", "--lock-timeout", "45s",
			"--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "127.0.0.1",
			"--identity-header", "X-Forwarded-User", "--read-only",
			"--log-level", "debug", "--log-format", "json", "--no-batch")
		want := config.Default()
		want.Listen = "127.0.0.1:1001"
		want.Upstream = "http://127.0.0.1:9/fava"
		want.LockTimeout = 45 * time.Second
		want.Identity = config.Identity{Header: "X-Forwarded-User", TrustedProxies: []string{"10.0.0.0/8", "127.0.0.1"}}
		want.ReadOnly = true
		want.Log = config.Log{Level: "debug", Format: "json"}
		want.Batch.Disabled = true
		if !reflect.DeepEqual(cfg, want) {
			t.Fatalf("\n got %+v\nwant %+v", cfg, want)
		}
	})
}

func TestConfigUnknownKey(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, key string }{
		"TopLevel": {"lisen: 127.0.0.1:1\n", "unknown key lisen"},
		"Nested":   {"identity:\n  hedaer: X-User\n", "unknown key identity.hedaer"},
		"InLedger": {"ledgers:\n  - file: a.beancount\n    lockfile: x\n", "lockfile"},
		"Several":  {"lisen: x\nlog:\n  levle: x\n", "unknown key lisen; unknown key log.levle"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := load(t, tc.yaml)
			if err == nil || !strings.Contains(err.Error(), tc.key) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line naming %q", err, tc.key)
			}
		})
	}
	t.Run("Env", func(t *testing.T) {
		t.Setenv("FAVAPROXY_LISTN", "127.0.0.1:1")
		_, err := load(t, "")
		if err == nil || !strings.Contains(err.Error(), "FAVAPROXY_LISTN") {
			t.Fatalf("err = %v, want one naming FAVAPROXY_LISTN", err)
		}
	})
}

func TestConfigEnv(t *testing.T) {
	t.Setenv("FAVAPROXY_IDENTITY_HEADER", "X-User")
	t.Setenv("FAVAPROXY_IDENTITY_TRUSTED_PROXIES", "10.0.0.0/8,::1")
	t.Setenv("FAVAPROXY_TIMEOUTS_DIAL", "2s")
	t.Setenv("FAVAPROXY_LIMITS_JSON_BODY", "2048")
	t.Setenv("FAVAPROXY_BATCH_DISABLED", "true")
	t.Setenv("FAVAPROXY_LEDGERS", "/srv/main.beancount, family=/srv/family.beancount")
	t.Setenv("FAVAPROXY_AUTH_TOKENS", "bot:"+strings.Repeat("ab", 32))
	cfg := mustLoad(t, "")
	if got, want := cfg.Identity.Header, "X-User"; got != want {
		t.Errorf("identity.header = %q, want %q", got, want)
	}
	if got, want := cfg.Identity.TrustedProxies, []string{"10.0.0.0/8", "::1"}; !reflect.DeepEqual(got, want) {
		t.Errorf("identity.trusted_proxies = %q, want %q", got, want)
	}
	if got, want := cfg.Timeouts.Dial, 2*time.Second; got != want {
		t.Errorf("timeouts.dial = %s, want %s", got, want)
	}
	if got, want := cfg.Limits.JSONBody, int64(2048); got != want {
		t.Errorf("limits.json_body = %d, want %d", got, want)
	}
	if !cfg.Batch.Disabled {
		t.Error("batch.disabled = false, want true")
	}
	wantLedgers := []config.Ledger{{File: "/srv/main.beancount"}, {File: "/srv/family.beancount", Slug: "family"}}
	if got := cfg.Ledgers; !reflect.DeepEqual(got, wantLedgers) {
		t.Errorf("ledgers = %+v, want %+v", got, wantLedgers)
	}
	if got, want := cfg.Auth.Tokens, []config.Token{{User: "bot", SHA256: strings.Repeat("ab", 32)}}; !reflect.DeepEqual(got, want) {
		t.Errorf("auth.tokens = %+v, want %+v", got, want)
	}
}

func TestConfigEveryKeyHasEnv(t *testing.T) {
	// Each key's variable must reach the struct: set every scalar key to a
	// value that differs from its default and check something changed.
	keys := configKeys()
	if got := len(keys); got < 30 {
		t.Fatalf("only %d keys found: %q", got, keys)
	}
	for _, k := range keys {
		if got, want := envName(k), "FAVAPROXY_"+strings.ToUpper(strings.ReplaceAll(k, ".", "_")); got != want {
			t.Errorf("env of %s = %s, want %s", k, got, want)
		}
	}
	base := mustLoad(t, "")
	for _, k := range keys {
		t.Run(k, func(t *testing.T) {
			val := "7"
			switch d, _ := defaultSettings(); d[k].(type) {
			case bool:
				val = "true"
			case time.Duration:
				val = "7m"
			case string:
				val = "changed"
			}
			if k == "ledgers" {
				val = "/x.beancount"
			}
			if k == "auth.tokens" {
				val = "u:x"
			}
			t.Setenv(envName(k), val)
			cfg := mustLoad(t, "")
			if reflect.DeepEqual(cfg, base) {
				t.Fatalf("%s=%s changed nothing", envName(k), val)
			}
		})
	}
}

func TestConfigYAMLShapes(t *testing.T) {
	cfg := mustLoad(t, `
lock_timeout: 45s
ledgers:
  - /srv/main.beancount
  - family=/srv/family.beancount
  - file: /srv/club.beancount
    slug: club
    lock_file: /run/club.lock
`)
	if got, want := cfg.LockTimeout, 45*time.Second; got != want {
		t.Errorf("lock_timeout = %s, want %s", got, want)
	}
	want := []config.Ledger{
		{File: "/srv/main.beancount"},
		{File: "/srv/family.beancount", Slug: "family"},
		{File: "/srv/club.beancount", Slug: "club", LockFile: "/run/club.lock"},
	}
	if got := cfg.Ledgers; !reflect.DeepEqual(got, want) {
		t.Errorf("ledgers = %+v, want %+v", got, want)
	}
}

func TestConfigRepeatedLedgerFlag(t *testing.T) {
	t.Setenv("FAVAPROXY_LEDGERS", "/from/env.beancount")
	cfg := mustLoad(t, "ledgers: [/from/file.beancount]\n",
		"--ledger", "/srv/a,b.beancount", "--ledger", "family=/srv/family.beancount")
	want := []config.Ledger{{File: "/srv/a,b.beancount"}, {File: "/srv/family.beancount", Slug: "family"}}
	if got := cfg.Ledgers; !reflect.DeepEqual(got, want) {
		t.Errorf("ledgers = %+v, want %+v (flags replace env and file)", got, want)
	}
}

func TestConfigValidationReportsAll(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"serve", "--listen", "nonsense", "--log-level", "loud"}, &stdout, &stderr)
	if got, want := code, 1; got != want {
		t.Fatalf("exit = %d, want %d; stderr:\n%s", got, want, stderr.String())
	}
	for _, want := range []string{"listen:", "log.level:", "ledgers:"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}

func TestConfigFileMissing(t *testing.T) {
	var stdout, stderr bytes.Buffer
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	if got, want := run(context.Background(), []string{"serve", "--config", missing}, &stdout, &stderr), 1; got != want {
		t.Fatalf("exit = %d, want %d", got, want)
	}
	if !strings.Contains(stderr.String(), missing) {
		t.Errorf("stderr does not name the file:\n%s", stderr.String())
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(config.Log{Level: "warn", Format: "json"}, &buf)
	log.Info("hidden")
	log.Warn("shown", "k", "v")
	if got, want := buf.String(), `"msg":"shown","k":"v"`; !strings.Contains(got, want) || strings.Contains(got, "hidden") {
		t.Fatalf("json warn log = %q, want only the warning, as JSON", got)
	}
	buf.Reset()
	newLogger(config.Log{Level: "debug", Format: "text"}, &buf).Debug("x", "k", "v")
	if got, want := buf.String(), "level=DEBUG msg=x k=v"; !strings.Contains(got, want) {
		t.Fatalf("text debug log = %q, want %q", got, want)
	}
}
