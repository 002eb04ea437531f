package journal_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/favaproxy/favaproxy/journal"
)

// A test binary started with these variables set appends records to a
// journal and exits: the second process of TestTwoProcesses.
const (
	envChildDir    = "FAVAPROXY_JOURNAL_CHILD_DIR"
	envChildLedger = "FAVAPROXY_JOURNAL_CHILD_LEDGER"
	envChildName   = "FAVAPROXY_JOURNAL_CHILD_NAME"
	envChildN      = "FAVAPROXY_JOURNAL_CHILD_N"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(envChildDir); dir != "" {
		if err := child(dir); err != nil {
			fmt.Fprintln(os.Stderr, "journal child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func child(dir string) error {
	n, err := strconv.Atoi(os.Getenv(envChildN))
	if err != nil {
		return err
	}
	j, err := journal.Open(dir, os.Getenv(envChildLedger))
	if err != nil {
		return err
	}
	defer j.Close()
	name := os.Getenv(envChildName)
	for i := range n {
		if err := j.Append(record(name, i)); err != nil {
			return err
		}
	}
	return nil
}

// record returns a record with a reply big enough that a torn or
// interleaved write would show.
func record(writer string, i int) journal.Record {
	return journal.Record{
		RequestID:   fmt.Sprintf("%s-req-%d", writer, i),
		User:        writer,
		Ledger:      "main",
		Route:       "add_entries",
		Kind:        "add_entries",
		Key:         fmt.Sprintf("%s-%d", writer, i),
		Fingerprint: strings.Repeat("f", 64),
		Entries:     1,
		Outcome:     journal.OutcomeOK,
		Status:      200,
		Reply:       json.RawMessage(fmt.Sprintf(`{"data":"Stored 1 entries.","mtime":"1","pad":%q}`, strings.Repeat(writer, 500))),
		Files:       []journal.FileChange{{Path: "/l/main.beancount", Before: "a", After: "b"}},
	}
}

func openJournal(tb testing.TB, dir string) *journal.Journal {
	tb.Helper()
	j, err := journal.Open(dir, "/ledgers/main.beancount")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { j.Close() })
	return j
}

func readAll(tb testing.TB, path string) []journal.Record {
	tb.Helper()
	var out []journal.Record
	if err := journal.Read(path, journal.Filter{}, func(r journal.Record) error {
		out = append(out, r)
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestPaths(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	j := openJournal(t, dir)
	if got, want := j.Path(), filepath.Join(dir, "main.beancount.journal.jsonl"); got != want {
		t.Errorf("Path=%q, want %q", got, want)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, j.Path(): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got&^want != 0 {
			t.Errorf("%s mode=%v, want at most %v", path, got, want)
		}
	}
}

func TestAppendLookup(t *testing.T) {
	var syncs atomic.Int64
	defer journal.CountSyncs(&syncs)()
	j := openJournal(t, t.TempDir())
	t0 := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)
	recs := []journal.Record{
		{Time: t0, User: "ann", Key: "k1", Outcome: journal.OutcomeError, Status: 500, Reply: json.RawMessage(`{"error":"x"}`)},
		{Time: t0.Add(time.Second), User: "ann", Key: "k1", Outcome: journal.OutcomeOK, Status: 200, Entries: 2, Reply: json.RawMessage(`{"data":"Stored 2 entries.","mtime":"1"}`)},
		{Time: t0.Add(2 * time.Second), User: "ann", Key: "k1", Outcome: journal.OutcomeReplayed, Status: 200},
		{Time: t0.Add(3 * time.Second), User: "bob", Key: "k10", Outcome: journal.OutcomeError, Status: 400},
		{User: "bob", Outcome: journal.OutcomeOK, Status: 200, Note: "no key; time set by Append"},
	}
	for _, r := range recs {
		if err := j.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := syncs.Load(), int64(len(recs)); got < want {
		t.Errorf("fsyncs=%d, want at least one per append (%d)", got, want)
	}
	r, ok, err := j.Lookup("k1")
	if err != nil || !ok {
		t.Fatalf("Lookup(k1)=%v, %v", ok, err)
	}
	if r.Outcome != journal.OutcomeOK || r.Entries != 2 || string(r.Reply) != `{"data":"Stored 2 entries.","mtime":"1"}` || !r.Time.Equal(t0.Add(time.Second)) {
		t.Errorf("Lookup(k1)=%+v, want the ok record", r)
	}
	if r, ok, _ := j.Latest("k1"); !ok || r.Outcome != journal.OutcomeReplayed {
		t.Errorf("Latest(k1)=%+v, %v; want the replay", r, ok)
	}
	// A key that only failed, a prefix of a key, and an unknown key.
	for _, k := range []string{"k10", "k", "k2"} {
		if _, ok, err := j.Lookup(k); ok || err != nil {
			t.Errorf("Lookup(%s)=%v, %v; want not found", k, ok, err)
		}
	}
	all := readAll(t, j.Path())
	if got, want := len(all), len(recs); got != want {
		t.Fatalf("Read %d records, want %d", got, want)
	}
	if all[4].Time.IsZero() || all[4].Note != recs[4].Note {
		t.Errorf("last record=%+v", all[4])
	}
	if err := j.Append(journal.Record{Reply: json.RawMessage("<html>")}); err == nil {
		t.Error("a reply that is not JSON was appended")
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Append(journal.Record{}); !errors.Is(err, journal.ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
}

func TestReadFilter(t *testing.T) {
	j := openJournal(t, t.TempDir())
	t0 := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC)
	for i, u := range []string{"ann", "bob", "ann", "bob", "ann"} {
		if err := j.Append(journal.Record{Time: t0.Add(time.Duration(i) * time.Hour), User: u, Key: "k" + strconv.Itoa(i), Outcome: journal.OutcomeOK}); err != nil {
			t.Fatal(err)
		}
	}
	count := func(f journal.Filter) int {
		n := 0
		if err := journal.Read(j.Path(), f, func(journal.Record) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for name, c := range map[string]struct {
		f    journal.Filter
		want int
	}{
		"All":        {journal.Filter{}, 5},
		"User":       {journal.Filter{User: "ann"}, 3},
		"Since":      {journal.Filter{Since: t0.Add(2 * time.Hour)}, 3},
		"SinceUser":  {journal.Filter{Since: t0.Add(2 * time.Hour), User: "bob"}, 1},
		"Key":        {journal.Filter{Key: "k3"}, 1},
		"NobodyElse": {journal.Filter{User: "eve"}, 0},
	} {
		if got := count(c.f); got != c.want {
			t.Errorf("%s: %d records, want %d", name, got, c.want)
		}
	}
	stop := errors.New("stop")
	n := 0
	if err := journal.Read(j.Path(), journal.Filter{}, func(journal.Record) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Errorf("Read did not stop at fn's error: %v after %d", err, n)
	}
}

// checkLines asserts that every line of the journal is one whole record
// and returns the keys seen, with their counts.
func checkLines(tb testing.TB, path string) map[string]int {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if len(b) > 0 && b[len(b)-1] != '\n' {
		tb.Fatalf("journal does not end with a newline")
	}
	keys := map[string]int{}
	for i, line := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		var r journal.Record
		if err := json.Unmarshal(line, &r); err != nil {
			tb.Fatalf("line %d is not a record (%v): %.200s", i+1, err, line)
		}
		want := record(r.User, 0).Reply
		if !bytes.Contains(r.Reply, bytes.Repeat([]byte(r.User), 500)) || len(r.Reply) != len(want) {
			tb.Fatalf("line %d: reply mixed with another record's", i+1)
		}
		keys[r.Key]++
	}
	return keys
}

func TestConcurrentAppends(t *testing.T) {
	dir := t.TempDir()
	shared := openJournal(t, dir)
	const writers, each = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j := shared
			if w%2 == 1 { // half the writers use a Journal of their own
				own, err := journal.Open(dir, "/ledgers/main.beancount")
				if err != nil {
					errs <- err
					return
				}
				defer own.Close()
				j = own
			}
			name := fmt.Sprintf("w%d", w)
			for i := range each {
				if err := j.Append(record(name, i)); err != nil {
					errs <- err
					return
				}
				if i%10 == 0 {
					if _, _, err := j.Lookup(fmt.Sprintf("%s-%d", name, i)); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	keys := checkLines(t, shared.Path())
	if got, want := len(keys), writers*each; got != want {
		t.Fatalf("%d distinct keys, want %d", got, want)
	}
	for k, n := range keys {
		if n != 1 {
			t.Fatalf("key %s written %d times", k, n)
		}
	}
	for w := range writers {
		if _, ok, err := shared.Lookup(fmt.Sprintf("w%d-%d", w, each-1)); !ok || err != nil {
			t.Fatalf("Lookup of writer %d's last key: %v, %v", w, ok, err)
		}
	}
}

// TestTwoProcesses appends from two other processes and this one at once,
// and checks that the lines stay whole and that Lookup sees the other
// processes' records.
func TestTwoProcesses(t *testing.T) {
	dir := t.TempDir()
	j := openJournal(t, dir)
	if _, ok, err := j.Lookup("p1-0"); ok || err != nil { // read the empty journal first
		t.Fatalf("Lookup before children: %v, %v", ok, err)
	}
	const each = 150
	var cmds []*exec.Cmd
	for _, name := range []string{"p1", "p2"} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envChildDir+"="+dir, envChildLedger+"=/ledgers/main.beancount",
			envChildName+"="+name, envChildN+"="+strconv.Itoa(each))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s stderr: %s", name, stderr.String())
			}
		})
		cmds = append(cmds, cmd)
	}
	for i := range each {
		if err := j.Append(record("p0", i)); err != nil {
			t.Fatal(err)
		}
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child: %v", err)
		}
	}
	keys := checkLines(t, j.Path())
	if got, want := len(keys), 3*each; got != want {
		t.Fatalf("%d distinct keys, want %d", got, want)
	}
	for _, k := range []string{"p1-0", "p1-149", "p2-77", "p0-5"} {
		r, ok, err := j.Lookup(k)
		if err != nil || !ok {
			t.Fatalf("Lookup(%s)=%v, %v", k, ok, err)
		}
		if got, want := r.RequestID, strings.Replace(k, "-", "-req-", 1); got != want {
			t.Errorf("Lookup(%s).RequestID=%q, want %q", k, got, want)
		}
	}
}

func TestTornLine(t *testing.T) {
	j := openJournal(t, t.TempDir())
	if err := j.Append(record("a", 0)); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := j.Lookup("a-0"); !ok {
		t.Fatal("first record not found")
	}
	// Another writer is half-way through a line.
	full, err := json.Marshal(record("b", 0))
	if err != nil {
		t.Fatal(err)
	}
	half := len(full) / 2
	appendRaw(t, j.Path(), full[:half])
	if _, ok, err := j.Lookup("b-0"); ok || err != nil {
		t.Fatalf("Lookup of a half-written record: %v, %v", ok, err)
	}
	if got := readAll(t, j.Path()); len(got) != 1 {
		t.Fatalf("Read returned %d records with a torn last line, want 1", len(got))
	}
	// The writer finishes the line: now it is read.
	appendRaw(t, j.Path(), append(full[half:], '\n'))
	if _, ok, err := j.Lookup("b-0"); !ok || err != nil {
		t.Fatalf("Lookup of the completed record: %v, %v", ok, err)
	}

	// A writer dies half-way: the next append ends the fragment, its own
	// record stays whole, and Read reports the broken line.
	crashed, _ := json.Marshal(record("c", 0))
	appendRaw(t, j.Path(), crashed[:40])
	if err := j.Append(record("d", 0)); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := j.Lookup("d-0"); !ok || err != nil {
		t.Fatalf("Lookup after a crashed writer: %v, %v", ok, err)
	}
	if _, ok, _ := j.Lookup("c-0"); ok {
		t.Fatal("the crashed writer's record was found")
	}
	if got, want := j.Unreadable(), 1; got != want {
		t.Errorf("Unreadable=%d, want %d", got, want)
	}
	var users []string
	err = journal.Read(j.Path(), journal.Filter{}, func(r journal.Record) error {
		users = append(users, r.User)
		return nil
	})
	var ce *journal.CorruptError
	if !errors.As(err, &ce) || len(ce.Lines) != 1 || ce.Lines[0] != 3 {
		t.Fatalf("Read error=%v, want a CorruptError for line 3", err)
	}
	if got, want := strings.Join(users, ","), "a,b,d"; got != want {
		t.Errorf("records read=%s, want %s", got, want)
	}
}

func appendRaw(tb testing.TB, path string, b []byte) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		tb.Fatal(err)
	}
}

// TestReplacedJournal checks that an open journal follows its path when
// the file is replaced, instead of reading and locking a file nobody else
// uses.
func TestReplacedJournal(t *testing.T) {
	dir := t.TempDir()
	j := openJournal(t, dir)
	if err := j.Append(record("a", 0)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(j.Path(), j.Path()+".old"); err != nil {
		t.Fatal(err)
	}
	other := openJournal(t, dir)
	if err := other.Append(record("b", 0)); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := j.Lookup("b-0"); !ok || err != nil {
		t.Fatalf("Lookup in the new file: %v, %v", ok, err)
	}
	if _, ok, _ := j.Lookup("a-0"); ok {
		t.Fatal("a record of the replaced file is still found")
	}
}

func TestAppendBatchOneSync(t *testing.T) {
	j := openJournal(t, t.TempDir())
	var syncs atomic.Int64
	defer journal.CountSyncs(&syncs)()
	var recs []journal.Record
	for i := range 16 {
		r := record("batch", i)
		r.Time = time.Time{} // set by AppendBatch
		recs = append(recs, r)
	}
	if err := j.AppendBatch(recs); err != nil {
		t.Fatal(err)
	}
	if got, want := syncs.Load(), int64(1); got != want {
		t.Fatalf("fsyncs = %d, want %d for one batch", got, want)
	}
	var got []journal.Record
	if err := journal.Read(j.Path(), journal.Filter{}, func(r journal.Record) error {
		got = append(got, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(recs) {
		t.Fatalf("read %d records, want %d", len(got), len(recs))
	}
	for i, r := range got {
		if got, want := r.Key, recs[i].Key; got != want {
			t.Fatalf("record %d key = %q, want %q (order kept)", i, got, want)
		}
		if r.Time.IsZero() {
			t.Fatalf("record %d has no time", i)
		}
		if _, ok, err := j.Lookup(r.Key); err != nil || !ok {
			t.Fatalf("Lookup(%q) = %v, %v", r.Key, ok, err)
		}
	}

	// A record that cannot be encoded leaves the whole batch unwritten.
	bad := []journal.Record{record("batch", 100), {Reply: json.RawMessage("<html>")}}
	if err := j.AppendBatch(bad); err == nil {
		t.Fatal("AppendBatch with an invalid reply succeeded")
	}
	if _, ok, _ := j.Lookup(bad[0].Key); ok {
		t.Fatal("a record of a refused batch was written")
	}
}

// TestLookupRefused: the refusal of a conditional write is its key's
// answer, as an ok record is, whether the key is in the index or was
// evicted from it and is found by a scan of the file.
func TestLookupRefused(t *testing.T) {
	dir := t.TempDir()
	j, err := journal.OpenWith(dir, "main.beancount", journal.Options{MaxKeys: 1, FilterBits: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	recs := []journal.Record{
		{User: "ann", Key: "k1", Outcome: journal.OutcomeError, Status: 503},
		{User: "ann", Key: "k1", Outcome: journal.OutcomeRefused, Status: 409, Reply: json.RawMessage(`{"error":"no"}`)},
		{User: "ann", Key: "k1", Outcome: journal.OutcomeOK, Status: 200, Reply: json.RawMessage(`{"data":"x"}`)},
		{User: "ann", Key: "k2", Outcome: journal.OutcomeRefused, Status: 412, Reply: json.RawMessage(`{"error":"v"}`)},
	}
	for _, r := range recs {
		if err := j.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	// k1 was evicted by k2 (one key kept): found by a scan.
	for key, status := range map[string]int{"k1": 409, "k2": 412} {
		r, ok, err := j.Lookup(key)
		if err != nil || !ok || r.Outcome != journal.OutcomeRefused || r.Status != status {
			t.Errorf("Lookup(%s)=%+v, %v, %v; want the refused record (%d)", key, r, ok, err, status)
		}
	}
}
