package auth

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/config"
)

func bearerRequest(h string) *http.Request {
	r := httptest.NewRequest(http.MethodPut, "/ledger/api/add_entries", nil)
	if h != "" {
		r.Header.Set("Authorization", h)
	}
	return r
}

func mustTokens(tb testing.TB, tokens ...config.Token) *Tokens {
	tb.Helper()
	t, err := NewTokens(tokens)
	if err != nil {
		tb.Fatalf("NewTokens: %v", err)
	}
	return t
}

func TestTokens(t *testing.T) {
	aliceToken, aliceSum, err := GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	const bobToken = "bob-0123456789abcdef~+/=="
	tk := mustTokens(t,
		config.Token{User: "alice", SHA256: aliceSum},
		config.Token{User: "bob", SHA256: strings.ToUpper(HashToken(bobToken))},
		config.Token{User: "alice", SHA256: HashToken("alice-second-token")},
	)

	t.Run("Right", func(t *testing.T) {
		wantUser(t, tk, bearerRequest("Bearer "+aliceToken), "alice")
		wantUser(t, tk, bearerRequest("Bearer "+bobToken), "bob")
		wantUser(t, tk, bearerRequest("Bearer alice-second-token"), "alice")
	})
	t.Run("SchemeCaseInsensitive", func(t *testing.T) {
		for _, scheme := range []string{"bearer", "BEARER", "bEaReR"} {
			wantUser(t, tk, bearerRequest(scheme+" "+aliceToken), "alice")
		}
	})
	t.Run("Wrong", func(t *testing.T) {
		wantUnauthorized(t, tk, bearerRequest("Bearer "+aliceToken[:len(aliceToken)-1]))
		wantUnauthorized(t, tk, bearerRequest("Bearer "+aliceToken+"A"))
		wantUnauthorized(t, tk, bearerRequest("Bearer "+strings.ToUpper(aliceToken)))
		wantUnauthorized(t, tk, bearerRequest("Bearer "+aliceSum)) // the hash is not the token
	})
	t.Run("Missing", func(t *testing.T) {
		wantUnauthorized(t, tk, bearerRequest(""))
	})
	t.Run("TwoHeaders", func(t *testing.T) {
		r := bearerRequest("Bearer " + aliceToken)
		r.Header.Add("Authorization", "Bearer "+bobToken)
		wantUnauthorized(t, tk, r)
	})
	t.Run("QueryParameterIgnored", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodGet, "/ledger/?access_token="+aliceToken, nil)
		wantUnauthorized(t, tk, r)
	})
	for name, h := range map[string]string{
		"SchemeOnly":      "Bearer",
		"EmptyToken":      "Bearer ",
		"OnlyPadding":     "Bearer ==",
		"Basic":           "Basic " + aliceToken,
		"NoSpace":         "Bearer" + aliceToken,
		"TokenWithSpace":  "Bearer " + aliceToken + " x",
		"PaddingInside":   "Bearer ab=cd",
		"NonASCII":        "Bearer tökén",
		"ControlChar":     "Bearer abc\x00def",
		"TooLong":         "Bearer " + strings.Repeat("a", maxTokenLen+1),
		"BearerPrefixed":  "Bearerx " + aliceToken,
		"TokenOnly":       aliceToken,
		"QuotedToken":     `Bearer "` + aliceToken + `"`,
		"TrailingNewline": "Bearer " + aliceToken + "\n",
	} {
		t.Run("Malformed/"+name, func(t *testing.T) {
			wantUnauthorized(t, tk, bearerRequest(h))
		})
	}
	t.Run("ExtraSpacesAccepted", func(t *testing.T) {
		wantUser(t, tk, bearerRequest("Bearer   "+aliceToken), "alice")
	})
	t.Run("Challenge", func(t *testing.T) {
		if got, want := tk.Challenge(), `Bearer realm="favaproxy"`; got != want {
			t.Fatalf("Challenge()=%q, want %q", got, want)
		}
	})
}

func TestNewTokensRejects(t *testing.T) {
	good := HashToken("t")
	for _, tc := range []struct {
		name   string
		tokens []config.Token
		want   string
	}{
		{"EmptyUser", []config.Token{{User: "", SHA256: good}}, "auth.tokens[0].user: empty user name"},
		{"ControlInUser", []config.Token{{User: "a\nb", SHA256: good}}, "auth.tokens[0].user"},
		{"ShortHash", []config.Token{{User: "a", SHA256: good[:63]}}, "auth.tokens[0].sha256: want 64 hex digits"},
		{"NotHex", []config.Token{{User: "a", SHA256: strings.Repeat("g", 64)}}, "auth.tokens[0].sha256"},
		{"PlainToken", []config.Token{{User: "a", SHA256: "t"}}, "auth.tokens[0].sha256"},
		{"SameTokenTwice", []config.Token{{User: "a", SHA256: good}, {User: "b", SHA256: strings.ToUpper(good)}}, "auth.tokens[1].sha256: same token as auth.tokens[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewTokens(tc.tokens)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err=%v, want it to contain %q", err, tc.want)
			}
		})
	}
	t.Run("AllProblemsAtOnce", func(t *testing.T) {
		_, err := NewTokens([]config.Token{{User: "", SHA256: good}, {User: "b", SHA256: "x"}})
		if err == nil || !strings.Contains(err.Error(), "tokens[0]") || !strings.Contains(err.Error(), "tokens[1]") {
			t.Fatalf("err=%v, want both tokens named", err)
		}
	})
}

func TestHashToken(t *testing.T) {
	// sha256("abc") from FIPS 180-2, appendix B.1.
	if got, want := HashToken("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Fatalf("HashToken(abc)=%s, want %s", got, want)
	}
	tok, sum, err := GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sum, HashToken(tok); got != want {
		t.Fatalf("GenerateToken sum=%s, want %s", got, want)
	}
	if _, ok := parseBearer("Bearer " + tok); !ok {
		t.Fatalf("generated token %q is not an RFC 6750 b64token", tok)
	}
	tok2, _, err := GenerateToken()
	if err != nil {
		t.Fatal(err)
	}
	if tok == tok2 {
		t.Fatal("two generated tokens are equal")
	}
}

func TestRoles(t *testing.T) {
	for _, tc := range []struct {
		name     string
		readOnly []string
		global   bool
		user     string
		want     bool
	}{
		{"NoRolesWriter", nil, false, "alice", true},
		{"ReadOnlyUser", []string{"bob", "alice"}, false, "alice", false},
		{"OtherUserWrites", []string{"bob", "alice"}, false, "carol", true},
		{"CaseMatters", []string{"alice"}, false, "Alice", true},
		{"DuplicatesHarmless", []string{"bob", "bob"}, false, "bob", false},
		{"GlobalReadOnly", nil, true, "alice", false},
		{"GlobalReadOnlyAnonymous", nil, true, "", false},
		{"AnonymousWrites", []string{"bob"}, false, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NewRoles(tc.readOnly, tc.global).CanWrite(tc.user); got != tc.want {
				t.Fatalf("CanWrite(%q)=%v, want %v", tc.user, got, tc.want)
			}
		})
	}
	t.Run("ZeroValueWrites", func(t *testing.T) {
		if !(Roles{}).CanWrite("alice") {
			t.Fatal("zero Roles refused a write")
		}
	})
	t.Run("CallerSliceNotShared", func(t *testing.T) {
		users := []string{"bob"}
		r := NewRoles(users, false)
		users[0] = "alice"
		if r.CanWrite("bob") || !r.CanWrite("alice") {
			t.Fatal("Roles changed with the caller's slice")
		}
	})
}
