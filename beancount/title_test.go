package beancount

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadTitle(t *testing.T) {
	for _, tt := range []struct{ src, want string }{
		{"option \"title\" \"Synthetic 10\"\n", "Synthetic 10"},
		{"; option \"title\" \"no\"\n", ""},
		{"option \"title\" \"a\"\noption \"title\" \"b \\\"q\\\"\"\r\n", `b "q"`},
		{"option \"operating_currency\" \"USD\"\n", ""},
		{"option\t\"title\"\t\"Tabs\"\n", "Tabs"},
	} {
		path := filepath.Join(t.TempDir(), "main.beancount")
		if err := os.WriteFile(path, []byte(tt.src), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ReadTitle(path)
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("ReadTitle(%q) = %q, want %q", tt.src, got, tt.want)
		}
	}
}
