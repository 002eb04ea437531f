package beancount_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/favaproxy/favaproxy/beancount"
)

func TestSlugifyFavaVectors(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "testdata", "fava-vectors", "slugs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var vectors []struct{ Title, Slug string }
	if err := json.Unmarshal(b, &vectors); err != nil {
		t.Fatal(err)
	}
	if len(vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range vectors {
		if got := beancount.Slugify(v.Title); got != v.Slug {
			t.Errorf("Slugify(%q)=%q, want %q", v.Title, got, v.Slug)
		}
	}
}

func TestSlugifyMore(t *testing.T) {
	for in, want := range map[string]string{
		"Synthetic 10":     "synthetic-10",
		"":                 "",
		"a\t\n b":          "a-b",
		"x_y—z":            "x_yz",
		"Ⅻ Roman":          "xii-roman",
		"²nd":              "2nd",
		"Beancount":        "beancount",
		"/srv/ledger/main": "srvledgermain",
	} {
		if got := beancount.Slugify(in); got != want {
			t.Errorf("Slugify(%q)=%q, want %q", in, got, want)
		}
	}
}

func TestLedgerSlug(t *testing.T) {
	if got, want := beancount.LedgerSlug("!!!", "/data/main.beancount"), "datamainbeancount"; got != want {
		t.Errorf("LedgerSlug=%q, want %q", got, want)
	}
	if got, want := beancount.LedgerSlug("Home", "/x"), "home"; got != want {
		t.Errorf("LedgerSlug=%q, want %q", got, want)
	}
}

func TestUniqueSlugs(t *testing.T) {
	got := beancount.UniqueSlugs([]string{"a", "a", "b", "a", "a-2"})
	want := []string{"a", "a-2", "b", "a-3", "a-2-2"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("UniqueSlugs=%v, want %v", got, want)
	}
}
