package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func validConfig(tb testing.TB) Config {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "main.beancount")
	if err := os.WriteFile(path, []byte("option \"title\" \"T\"\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	c := Default()
	c.Ledgers = []Ledger{{File: path}}
	return c
}

func TestDefaultWithLedgerIsValid(t *testing.T) {
	c := validConfig(t)
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := validConfig(t)
	c.Listen = "no-port"
	c.Upstream = "ftp://x"
	c.Ledgers = append(c.Ledgers, Ledger{File: "/does/not/exist"})
	c.LockTimeout = 0
	c.Identity.TrustedProxies = []string{"10.0.0.0/8", "bogus"}
	c.Auth.Mode = "magic"
	c.Log.Level = "loud"
	c.Idempotency.Prefix = "bad prefix"
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() = nil, want errors")
	}
	for _, want := range []string{"listen:", "upstream:", "ledgers[1].file:", "lock_timeout:", `"bogus"`, "auth.mode:", "log.level:", "idempotency.prefix:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() error lacks %q:\n%v", want, err)
		}
	}
}

func TestValidateRejectsLockOnLedger(t *testing.T) {
	c := validConfig(t)
	c.Ledgers[0].LockFile = c.Ledgers[0].File
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "lock_file") {
		t.Fatalf("Validate() = %v, want lock_file error", err)
	}
}

func TestParseLedger(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Ledger
	}{
		{"/srv/main.beancount", Ledger{File: "/srv/main.beancount"}},
		{"home=/srv/main.beancount", Ledger{File: "/srv/main.beancount", Slug: "home"}},
		{"/srv/a=b.beancount", Ledger{File: "/srv/a=b.beancount"}},
		{"=x.beancount", Ledger{File: "=x.beancount"}},
	} {
		if got := ParseLedger(tt.in); got != tt.want {
			t.Errorf("ParseLedger(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestLockAndStatePaths(t *testing.T) {
	l := Ledger{File: "/srv/books/main.beancount"}
	if got, want := l.LockPath(), "/srv/books/.main.beancount.favaproxy.lock"; got != want {
		t.Errorf("LockPath() = %q, want %q", got, want)
	}
	if got, want := l.StatePath(), "/srv/books/.favaproxy"; got != want {
		t.Errorf("StatePath() = %q, want %q", got, want)
	}
}

func TestTrustedPrefixes(t *testing.T) {
	c := Default()
	c.Identity.TrustedProxies = []string{"127.0.0.1", "10.1.2.3/8", "::1"}
	ps, err := c.TrustedPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	got := []string{ps[0].String(), ps[1].String(), ps[2].String()}
	want := []string{"127.0.0.1/32", "10.0.0.0/8", "::1/128"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("prefix %d = %s, want %s", i, got[i], want[i])
		}
	}
}

// TestValidateMetaKey pins that idempotency.meta_key follows Beancount's
// metadata key grammar, two characters at least: a key Beancount would not
// read back would make every keyed Balance and Note fail.
func TestValidateMetaKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"idempotency-key", true},
		{"ik", true},
		{"k", false},
		{"", false},
		{"Key", false},
		{"a.b", false},
		{"a/b", false},
	} {
		c := validConfig(t)
		c.Idempotency.MetaKey = tc.key
		err := c.Validate()
		if got := err == nil; got != tc.ok {
			t.Errorf("meta_key %q: Validate() = %v, want ok=%v", tc.key, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "idempotency.meta_key:") {
			t.Errorf("meta_key %q: error does not name the key: %v", tc.key, err)
		}
	}
}

// TestValidateReadOnlyUsersNeedIdentity: read_only_users without auth.mode
// and without trusted proxies would take the Basic user name a client
// chooses for its identity, so any client could write as another user.
// Validate refuses that, and accepts either way of establishing who a user
// is.
func TestValidateReadOnlyUsersNeedIdentity(t *testing.T) {
	for _, tc := range []struct {
		name      string
		configure func(*Config)
		ok        bool
	}{
		{"Alone", func(*Config) {}, false},
		{"TrustedProxy", func(c *Config) { c.Identity.TrustedProxies = []string{"127.0.0.1"} }, true},
		{"AuthToken", func(c *Config) {
			c.Auth.Mode = "token"
			c.Auth.Tokens = []Token{{User: "viewer", SHA256: strings.Repeat("ab", 32)}}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig(t)
			c.Auth.ReadOnlyUsers = []string{"viewer"}
			tc.configure(&c)
			err := c.Validate()
			if got := err == nil; got != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "auth.read_only_users:") {
				t.Errorf("error does not name the key: %v", err)
			}
		})
	}
}
