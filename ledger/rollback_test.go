package ledger

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/config"
)

func TestKept(t *testing.T) {
	pre := "a\nb\nc\n"
	for _, tc := range []struct {
		cur  string
		want bool
	}{
		{"a\nb\nc\n", true},
		{"a\nx\nb\nc\n\ny\n", true},           // insertions
		{"a\r\nb\r\nnew\r\nc\r\n", true},      // newline style does not matter
		{"a\nb\n", false},                     // truncated
		{"a\nc\nb\n", false},                  // reordered
		{"", false},                           // emptied
		{"a\nb\nc\n\n2024-01-01 * \"x", true}, // a torn append keeps the lines: keys decide
	} {
		if got := kept([]byte(pre), []byte(tc.cur)); got != tc.want {
			t.Errorf("kept(%q, %q) = %v, want %v", pre, tc.cur, got, tc.want)
		}
	}
}

// rollbackEnv is a ledger file with a rollback directory beside it.
type rollbackEnv struct {
	rb   *rollbacks
	file string
	ix   *beancount.Index
}

func newRollbackEnv(tb testing.TB, text string) *rollbackEnv {
	tb.Helper()
	dir := tb.TempDir()
	file := filepath.Join(dir, "main.beancount")
	if err := os.WriteFile(file, []byte(text), 0o640); err != nil {
		tb.Fatal(err)
	}
	return &rollbackEnv{
		rb:   &rollbacks{dir: rollbackDir(filepath.Join(dir, ".favaproxy"), file), sync: syncFile},
		file: file,
		ix:   beancount.NewIndex(file, beancount.IndexOptions{MetaKey: "idempotency-key"}),
	}
}

func (e *rollbackEnv) read(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(e.file)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

const rbLedger = "2024-01-01 open Assets:Cash\n\n2024-01-02 * \"one\"\n  Assets:Cash  1 USD\n  Assets:Cash\n"

func TestRollbackRestoresAndKeepsReplaced(t *testing.T) {
	e := newRollbackEnv(t, rbLedger)
	m := &manifest{Kind: "add_entries", Insert: true}
	if err := e.rb.begin(m, []string{e.file}, nil); err != nil {
		t.Fatal(err)
	}
	if got, err := e.rb.hot(); err != nil || got == nil {
		t.Fatalf("hot() = %v, %v; want the manifest", got, err)
	}
	torn := rbLedger[:20]
	if err := os.WriteFile(e.file, []byte(torn), 0o640); err != nil {
		t.Fatal(err)
	}
	restored, err := e.rb.restore(m)
	if err != nil || len(restored) != 1 {
		t.Fatalf("restore = %v, %v", restored, err)
	}
	if got := e.read(t); got != rbLedger {
		t.Fatalf("restored text %q, want the pre-image", got)
	}
	fi, err := os.Stat(e.file)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode after restore = %v (%v), want 0640", fi.Mode().Perm(), err)
	}
	matches, _ := filepath.Glob(filepath.Join(filepath.Dir(e.rb.dir), "main.beancount.*.replaced"))
	if len(matches) != 1 {
		t.Fatalf("replaced copies: %v, want one", matches)
	}
	if b, _ := os.ReadFile(matches[0]); string(b) != torn {
		t.Errorf("replaced copy %q, want the torn text", b)
	}
	if err := e.rb.commit(); err != nil {
		t.Fatal(err)
	}
	if got, err := e.rb.hot(); err != nil || got != nil {
		t.Fatalf("after commit hot() = %v, %v; want none", got, err)
	}
}

func TestRollbackRefusesDamagedPreimage(t *testing.T) {
	e := newRollbackEnv(t, rbLedger)
	m := &manifest{Kind: "source"}
	if err := e.rb.begin(m, []string{e.file}, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.rb.dir, m.Files[0].Copy), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(e.file, []byte("changed\n"), 0o640)
	if _, err := e.rb.restore(m); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("restore with a damaged copy: %v, want a refusal", err)
	}
	if got := e.read(t); got != "changed\n" {
		t.Errorf("the file was touched: %q", got)
	}
}

func TestRollbackFollowsSymlink(t *testing.T) {
	e := newRollbackEnv(t, rbLedger)
	link := filepath.Join(filepath.Dir(e.file), "link.beancount")
	if err := os.Symlink(e.file, link); err != nil {
		t.Fatal(err)
	}
	m := &manifest{Kind: "source"}
	if err := e.rb.begin(m, []string{link}, nil); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(e.file, []byte("torn"), 0o640)
	if _, err := e.rb.restore(m); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink was replaced by a file")
	}
	if got := e.read(t); got != rbLedger {
		t.Errorf("target %q, want the pre-image", got)
	}
}

func TestRollbackComplete(t *testing.T) {
	added := rbLedger + "\n2024-01-03 * \"two\" ^k1\n  Assets:Cash  2 USD\n  Assets:Cash\n"
	for _, tc := range []struct {
		name string
		m    manifest
		cur  string
		want bool
	}{
		{"KeyedAll", manifest{Insert: true, AllKeyed: true, Keys: map[string]int{"k1": 1}}, added, true},
		{"KeyedMissing", manifest{Insert: true, AllKeyed: true, Keys: map[string]int{"k1": 1}}, rbLedger, false},
		{"KeyedTwiceSent", manifest{Insert: true, AllKeyed: true, Keys: map[string]int{"k1": 2}}, added, false},
		{"NotAllKeyed", manifest{Insert: true, Keys: map[string]int{"k1": 1}}, added, false},
		{"KeyedButTruncated", manifest{Insert: true, AllKeyed: true, Keys: map[string]int{"k1": 1}}, added[len("2024-01-01 open Assets:Cash\n"):], false},
		{"ExpectReached", manifest{}, "new text\n", true},
		{"ExpectMissed", manifest{}, "other text\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newRollbackEnv(t, rbLedger)
			m := tc.m
			var expect map[string]string
			if !m.Insert {
				expect = map[string]string{e.file: checksum.String("new text\n")}
			}
			if err := e.rb.begin(&m, []string{e.file}, expect); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(e.file, []byte(tc.cur), 0o640)
			if got := e.rb.complete(&m, e.ix); got != tc.want {
				t.Errorf("complete = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestAddTargets(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "main.beancount")
	os.WriteFile(main, []byte("include \"food.beancount\"\ninclude \"opts.beancount\"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "food.beancount"), []byte("2024-01-01 custom \"fava-option\" \"insert-entry\" \"Expenses:Food\"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "opts.beancount"), []byte("2024-01-01 custom \"fava-option\" \"default_file\" \"new/entries.beancount\"\n"), 0o644)
	l := &Ledger{index: beancount.NewIndex(main, beancount.IndexOptions{MetaKey: "idempotency-key"})}
	if err := l.index.Refresh(); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(l.addTargets(), ",")
	want := strings.Join([]string{main, filepath.Join(dir, "food.beancount"), filepath.Join(dir, "opts.beancount"), filepath.Join(dir, "new", "entries.beancount")}, ",")
	if got != want {
		t.Fatalf("addTargets = %s\nwant %s", got, want)
	}
}

// TestLongPathsRefusedCheaply pins a slow path check: every prefix of a
// path was resolved, so a 32 KB document name cost over a second; a path
// over maxPath bytes is now refused at once.
func TestLongPathsRefusedCheaply(t *testing.T) {
	long := "/" + strings.Repeat("a/", 16<<10)
	t0 := time.Now()
	err := inFolders("filename", long, "/ledger/main.beancount", []string{"/ledger/docs"})
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("inFolders(32 KB path) = %v, want a refusal of its length", err)
	}
	if isLedgerFile(long, []string{long}) {
		t.Fatal("isLedgerFile took a 32 KB path")
	}
	if d := time.Since(t0); d > 100*time.Millisecond {
		t.Fatalf("refusing a long path took %s", d)
	}
}

// TestVersionCacheSeesChanges: the version reads remember is computed
// again when a file changes, even to the same size, by anyone.
func TestVersionCacheSeesChanges(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "main.beancount")
	old := time.Now().Add(-time.Hour)
	write := func(text string, at time.Time) {
		if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f, at, at); err != nil {
			t.Fatal(err)
		}
	}
	write(rbLedger, old)
	all := config.Default()
	all.Ledgers = []config.Ledger{{File: f}}
	l, err := Open(t.Context(), all, all.Ledgers[0], Options{APIBase: &url.URL{Scheme: "http", Host: "x", Path: "/l/api/"}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(t.Context())
	v1, err := l.Version()
	if err != nil {
		t.Fatal(err)
	}
	if l.vcache.Load() == nil {
		t.Fatal("the version of files untouched for an hour was not remembered")
	}
	if v, _ := l.Version(); v != v1 {
		t.Fatalf("unchanged ledger: version %s then %s", v1, v)
	}
	write(strings.Replace(rbLedger, "one", "two", 1), old.Add(time.Second)) // same size
	if v, _ := l.Version(); v == v1 {
		t.Fatal("a change of the same size kept the version")
	}
}
