package auth

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// hashLine returns an htpasswd line for user and password, hashed with
// bcrypt at the lowest cost to keep the tests fast.
func hashLine(tb testing.TB, user, password string) string {
	tb.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		tb.Fatal(err)
	}
	return user + ":" + string(h)
}

// writeFile writes lines to path, one per line, and moves its modification
// time by bump so that a rewrite is seen even on coarse file systems.
func writeFile(tb testing.TB, path string, bump time.Duration, lines ...string) {
	tb.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	mt := time.Now().Add(bump)
	if err := os.Chtimes(path, mt, mt); err != nil {
		tb.Fatal(err)
	}
}

func basicRequest(user, password string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/ledger/income_statement/", nil)
	r.SetBasicAuth(user, password)
	return r
}

func mustBasic(tb testing.TB, path string) *Basic {
	tb.Helper()
	b, err := NewBasic(path)
	if err != nil {
		tb.Fatalf("NewBasic: %v", err)
	}
	return b
}

func wantUser(tb testing.TB, a Authenticator, r *http.Request, want string) {
	tb.Helper()
	got, err := a.Authenticate(r)
	if err != nil {
		tb.Fatalf("Authenticate: %v, want user %q", err, want)
	}
	if got != want {
		tb.Fatalf("user=%q, want %q", got, want)
	}
}

func wantUnauthorized(tb testing.TB, a Authenticator, r *http.Request) {
	tb.Helper()
	got, err := a.Authenticate(r)
	if !errors.Is(err, ErrUnauthorized) {
		tb.Fatalf("Authenticate: user=%q err=%v, want ErrUnauthorized", got, err)
	}
	if got != "" {
		tb.Fatalf("user=%q on failure, want empty", got)
	}
}

func TestBasic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeFile(t, path, 0,
		"# favaproxy users",
		hashLine(t, "alice", "correct horse"),
		"",
		hashLine(t, "bob", "battery staple"),
		hashLine(t, "zoë", "pä:ss wörd"),
	)
	b := mustBasic(t, path)

	t.Run("RightPassword", func(t *testing.T) {
		wantUser(t, b, basicRequest("alice", "correct horse"), "alice")
		wantUser(t, b, basicRequest("bob", "battery staple"), "bob")
	})
	t.Run("RightPasswordCached", func(t *testing.T) {
		for range 3 {
			wantUser(t, b, basicRequest("alice", "correct horse"), "alice")
		}
	})
	t.Run("UTF8AndColonInPassword", func(t *testing.T) {
		wantUser(t, b, basicRequest("zoë", "pä:ss wörd"), "zoë")
	})
	t.Run("WrongPassword", func(t *testing.T) {
		wantUnauthorized(t, b, basicRequest("alice", "correct horse "))
		wantUnauthorized(t, b, basicRequest("alice", "battery staple"))
		wantUnauthorized(t, b, basicRequest("alice", ""))
	})
	t.Run("OtherUsersPassword", func(t *testing.T) {
		wantUnauthorized(t, b, basicRequest("bob", "correct horse"))
	})
	t.Run("UnknownUser", func(t *testing.T) {
		wantUnauthorized(t, b, basicRequest("mallory", "correct horse"))
		wantUnauthorized(t, b, basicRequest("Alice", "correct horse"))
		wantUnauthorized(t, b, basicRequest("", "correct horse"))
	})
	t.Run("PasswordBeyondBcryptLimit", func(t *testing.T) {
		// bcrypt ignores bytes past 72; such passwords are refused, not truncated.
		long := strings.Repeat("p", 72)
		p2 := filepath.Join(t.TempDir(), "htpasswd")
		writeFile(t, p2, 0, hashLine(t, "carol", long))
		b2 := mustBasic(t, p2)
		wantUser(t, b2, basicRequest("carol", long), "carol")
		wantUnauthorized(t, b2, basicRequest("carol", long+"x"))
	})
	t.Run("MissingHeader", func(t *testing.T) {
		wantUnauthorized(t, b, httptest.NewRequest(http.MethodGet, "/", nil))
	})
	t.Run("TwoHeaders", func(t *testing.T) {
		r := basicRequest("alice", "correct horse")
		r.Header.Add("Authorization", r.Header.Get("Authorization"))
		wantUnauthorized(t, b, r)
	})
	t.Run("SchemeCaseInsensitive", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Authorization", "bAsIc "+base64.StdEncoding.EncodeToString([]byte("alice:correct horse")))
		wantUser(t, b, r, "alice")
	})
	for name, h := range map[string]string{
		"NoScheme":       base64.StdEncoding.EncodeToString([]byte("alice:correct horse")),
		"BearerScheme":   "Bearer " + base64.StdEncoding.EncodeToString([]byte("alice:correct horse")),
		"NotBase64":      "Basic alice:correct horse",
		"URLBase64":      "Basic " + base64.URLEncoding.EncodeToString([]byte("alice:correct horse?>")),
		"NoColon":        "Basic " + base64.StdEncoding.EncodeToString([]byte("alicecorrect horse")),
		"EmptyBasic":     "Basic ",
		"SchemeOnly":     "Basic",
		"ControlInUser":  "Basic " + base64.StdEncoding.EncodeToString([]byte("ali\nce:correct horse")),
		"TrailingGarbag": "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:correct horse")) + " x",
	} {
		t.Run("Malformed/"+name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header.Set("Authorization", h)
			wantUnauthorized(t, b, r)
		})
	}
	t.Run("Challenge", func(t *testing.T) {
		if got, want := b.Challenge(), `Basic realm="favaproxy", charset="UTF-8"`; got != want {
			t.Fatalf("Challenge()=%q, want %q", got, want)
		}
	})
}

// TestBasicApacheHtpasswd reads lines made by Apache's own tool:
// `htpasswd -nbB -C 5 alice 'correct horse'` and
// `htpasswd -nbB -C 5 dave 'pä:ss wörd'`, which write $2y$ hashes.
func TestBasicApacheHtpasswd(t *testing.T) {
	b := mustBasic(t, filepath.Join("testdata", "apache-bcrypt.htpasswd"))
	wantUser(t, b, basicRequest("alice", "correct horse"), "alice")
	wantUser(t, b, basicRequest("dave", "pä:ss wörd"), "dave")
	wantUnauthorized(t, b, basicRequest("alice", "correct horsE"))
	wantUnauthorized(t, b, basicRequest("dave", "pä"))
}

func TestBasicRejectsFile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		want  string // in the error
	}{
		{"ApacheMD5", []string{"alice:$2y$05$p4bPacOP4IH5rr3ypnG4qObfDK656TExtLdWHEb1xXObIQQFDewf6", "bob:$apr1$t1c6rtTg$f8aY6FqLh3ZhU6a8d.Vwj."}, `line 2: user "bob": hash is not bcrypt`},
		{"SHA1", []string{"carol:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ="}, `line 1: user "carol": hash is not bcrypt`},
		{"Crypt", []string{"", "", "dan:rqXexS6ZhobKA"}, `line 3: user "dan": hash is not bcrypt`},
		{"Plain", []string{"erin:secret"}, `line 1: user "erin": hash is not bcrypt`},
		{"NoColon", []string{"frank"}, `line 1: no ':'`},
		{"EmptyUser", []string{":$2y$05$p4bPacOP4IH5rr3ypnG4qObfDK656TExtLdWHEb1xXObIQQFDewf6"}, "line 1: empty user name"},
		{"TruncatedHash", []string{"gus:$2y$05$p4bPacOP4IH5rr3ypnG4qObfDK656TExtLdWHEb1xXObIQQFDew"}, `line 1: user "gus": malformed bcrypt hash`},
		{"BadCost", []string{"hal:$2y$99$p4bPacOP4IH5rr3ypnG4qObfDK656TExtLdWHEb1xXObIQQFDewf6"}, `line 1: user "hal": malformed bcrypt hash`},
		{"Duplicate", []string{"alice:$2y$05$p4bPacOP4IH5rr3ypnG4qObfDK656TExtLdWHEb1xXObIQQFDewf6", "alice:$2y$05$p4bPacOP4IH5rr3ypnG4qObfDK656TExtLdWHEb1xXObIQQFDewf6"}, `line 2: user "alice" appears twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "htpasswd")
			writeFile(t, path, 0, tc.lines...)
			b, err := NewBasic(path)
			if err == nil {
				t.Fatalf("NewBasic accepted %q", tc.lines)
			}
			if b != nil {
				t.Fatalf("NewBasic returned %v with error", b)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "p4bPacOP4IH5") {
				t.Fatalf("error %q shows a hash", err)
			}
		})
	}
	t.Run("ApacheFixtures", func(t *testing.T) {
		for _, f := range []string{"apache-md5.htpasswd", "apache-sha1.htpasswd"} {
			if _, err := NewBasic(filepath.Join("testdata", f)); err == nil || !strings.Contains(err.Error(), "not bcrypt") {
				t.Errorf("NewBasic(%s): err=%v, want not bcrypt", f, err)
			}
		}
	})
	t.Run("Missing", func(t *testing.T) {
		if _, err := NewBasic(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err=%v, want ErrNotExist", err)
		}
	})
}

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestBasicReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	writeFile(t, path, -time.Hour, hashLine(t, "alice", "one"))
	b := mustBasic(t, path)
	clock := &fakeClock{now: time.Now()}
	b.mu.Lock()
	b.now, b.checked = clock.Now, clock.Now()
	b.mu.Unlock()

	wantUser(t, b, basicRequest("alice", "one"), "alice") // and cached

	t.Run("PasswordChanged", func(t *testing.T) {
		writeFile(t, path, -time.Minute, hashLine(t, "alice", "two"), hashLine(t, "bob", "three"))
		// Within a second of the last look the file is not read again.
		clock.Advance(500 * time.Millisecond)
		wantUser(t, b, basicRequest("alice", "one"), "alice")
		wantUnauthorized(t, b, basicRequest("bob", "three"))

		clock.Advance(600 * time.Millisecond)
		wantUnauthorized(t, b, basicRequest("alice", "one")) // the cache went with the old file
		wantUser(t, b, basicRequest("alice", "two"), "alice")
		wantUser(t, b, basicRequest("bob", "three"), "bob")
	})
	t.Run("UserRemoved", func(t *testing.T) {
		writeFile(t, path, 0, hashLine(t, "alice", "two"))
		clock.Advance(time.Second)
		wantUser(t, b, basicRequest("alice", "two"), "alice")
		wantUnauthorized(t, b, basicRequest("bob", "three"))
	})
	t.Run("ReplacedByRename", func(t *testing.T) {
		tmp := path + ".tmp"
		writeFile(t, tmp, time.Minute, hashLine(t, "carol", "four"))
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Second)
		wantUser(t, b, basicRequest("carol", "four"), "carol")
		wantUnauthorized(t, b, basicRequest("alice", "two"))
	})
	t.Run("BrokenFileFailsClosed", func(t *testing.T) {
		writeFile(t, path, 2*time.Minute, hashLine(t, "carol", "four"), "dan:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=")
		clock.Advance(time.Second)
		_, err := b.Authenticate(basicRequest("carol", "four"))
		if err == nil || errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "line 2") {
			t.Fatalf("err=%v, want a load error naming line 2 that is not ErrUnauthorized", err)
		}
		// Fixed: served again.
		writeFile(t, path, 3*time.Minute, hashLine(t, "carol", "four"))
		clock.Advance(time.Second)
		wantUser(t, b, basicRequest("carol", "four"), "carol")
	})
	t.Run("FileRemovedFailsClosed", func(t *testing.T) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Second)
		if _, err := b.Authenticate(basicRequest("carol", "four")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err=%v, want ErrNotExist", err)
		}
	})
}

func TestBasicConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	lines := []string{hashLine(t, "alice", "one"), hashLine(t, "bob", "two")}
	writeFile(t, path, 0, lines...)
	b := mustBasic(t, path)
	b.mu.Lock()
	b.checkEvery = 0 // look at the file on every request
	b.mu.Unlock()

	var wg sync.WaitGroup
	// One writer replaces the file by rename, as htpasswd does, while
	// readers authenticate: every answer must be right.
	wg.Go(func() {
		for i := range 10 {
			tmp := path + ".tmp"
			writeFile(t, tmp, time.Duration(i)*time.Second, lines...)
			if err := os.Rename(tmp, path); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for i := range 4 {
		wg.Go(func() {
			for range 5 {
				if i%2 == 0 {
					if u, err := b.Authenticate(basicRequest("alice", "one")); err != nil || u != "alice" {
						t.Errorf("alice: user=%q err=%v", u, err)
					}
				} else if u, err := b.Authenticate(basicRequest("bob", "one")); !errors.Is(err, ErrUnauthorized) {
					t.Errorf("bob with alice's password: user=%q err=%v", u, err)
				}
			}
		})
	}
	wg.Wait()
}

// TestBasicUnknownUserCostsABcrypt checks that an unknown user is compared
// against a dummy hash at the file's cost rather than refused at once: the
// dummy must be a valid hash at the highest cost in the file.
func TestBasicUnknownUserCostsABcrypt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "htpasswd")
	h, err := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost+2)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, 0, hashLine(t, "alice", "one"), "bob:"+string(h))
	b := mustBasic(t, path)
	cost, err := bcrypt.Cost(b.dummy)
	if err != nil {
		t.Fatalf("dummy hash: %v", err)
	}
	if got, want := cost, bcrypt.MinCost+2; got != want {
		t.Fatalf("dummy cost=%d, want %d", got, want)
	}
}
