package checksum_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/checksum"
)

type vectorFile struct {
	File           string `json:"file"`
	FileSHA256     string `json:"file_sha256sum"`
	RawBytesSHA256 string `json:"raw_bytes_sha256"`
	Slices         []struct {
		Lineno    int    `json:"lineno"`
		Slice     string `json:"slice"`
		SHA256Sum string `json:"sha256sum"`
	} `json:"slices"`
}

func loadVectors(tb testing.TB) []vectorFile {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "fava-vectors", "vectors.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var v []vectorFile
	if err := json.Unmarshal(b, &v); err != nil {
		tb.Fatal(err)
	}
	return v
}

func TestFavaVectors(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.File, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("..", "testdata", "fava-vectors", v.File))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := checksum.File(raw), v.FileSHA256; got != want {
				t.Errorf("File=%s, want %s", got, want)
			}
			if got, want := checksum.Bytes(raw), v.RawBytesSHA256; got != want {
				t.Errorf("Bytes=%s, want %s", got, want)
			}
			text := string(checksum.Normalize(raw))
			for _, s := range v.Slices {
				got, ok := checksum.Slice(text, s.Lineno)
				if !ok {
					t.Fatalf("line %d: no slice", s.Lineno)
				}
				if got != s.Slice {
					t.Errorf("line %d: slice=%q, want %q", s.Lineno, got, s.Slice)
				}
				if got, want := checksum.String(got), s.SHA256Sum; got != want {
					t.Errorf("line %d: sha256=%s, want %s", s.Lineno, got, want)
				}
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"a\nb", "a\nb"},
		{"a\r\nb\r\n", "a\nb\n"},
		{"a\rb\r", "a\nb\n"},
		{"a\r\r\nb", "a\n\nb"},
		{"\r", "\n"},
		{"é\r\n☕", "é\n☕"},
	} {
		if got := string(checksum.Normalize([]byte(tc.in))); got != tc.want {
			t.Errorf("Normalize(%q)=%q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSlice(t *testing.T) {
	text := strings.Join([]string{
		"2024-01-01 open Assets:Bank", // 1
		"2024-01-02 * \"x\"",          // 2
		"  ; indented comment",        // 3
		"  Assets:Bank  1 USD",        // 4
		"\tEquity:Open",               // 5
		"   ",                         // 6 whitespace-only line ends a slice
		"  Orphan:Posting",            // 7
		"",                            // 8
		"",                            // 9
		"2024-01-03 * \"y\"",          // 10
		"; comment at column 0",       // 11
		"",
	}, "\n")
	for _, tc := range []struct {
		line int
		want string
		ok   bool
	}{
		{1, "2024-01-01 open Assets:Bank", true},
		{2, "2024-01-02 * \"x\"\n  ; indented comment\n  Assets:Bank  1 USD\n\tEquity:Open", true},
		{7, "  Orphan:Posting", true},
		{10, "2024-01-03 * \"y\"", true},
		{8, "", true},
		{12, "", false},
		{0, "", false},
	} {
		got, ok := checksum.Slice(text, tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("Slice(line %d)=%q,%v, want %q,%v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNewline(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a\r\nb\n", "\r\n"},
		{"a\nb\r\n", "\n"},
		{"abc", "\n"},
		// Fava only looks at the bytes before the first "\n".
		{"a\rb", "\n"},
		{"a\rb\n", "\n"},
		{"a\rb\r\n", "\r\n"},
		{"\r\n", "\r\n"},
		{"", "\n"},
	} {
		if got := checksum.Newline([]byte(tc.in)); got != tc.want {
			t.Errorf("Newline(%q)=%q, want %q", tc.in, got, tc.want)
		}
	}
	if got, want := checksum.Denormalize("a\nb\n", "\r\n"), "a\r\nb\r\n"; got != want {
		t.Errorf("Denormalize=%q, want %q", got, want)
	}
}

func FuzzSlice(f *testing.F) {
	f.Add("2024-01-01 * \"x\"\n  A:B 1 USD\n\n", 1)
	f.Add("a\r\n  b\r\n", 1)
	f.Add("", 0)
	f.Fuzz(func(t *testing.T, text string, lineno int) {
		norm := string(checksum.Normalize([]byte(text)))
		if strings.ContainsRune(norm, '\r') {
			t.Fatalf("Normalize left a CR in %q", norm)
		}
		s, ok := checksum.Slice(norm, lineno)
		if !ok {
			return
		}
		if !strings.Contains(norm, s) {
			t.Fatalf("slice %q not in text", s)
		}
		if strings.HasSuffix(s, "\n") {
			t.Fatalf("slice %q ends in a newline", s)
		}
	})
}
