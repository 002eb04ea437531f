// Package journal keeps favaproxy's per-ledger journal of writes: an
// append-only JSON Lines file that is both the memory of idempotency keys
// (which key wrote what, with which request fingerprint and which reply)
// and the audit trail (who wrote, when, through which route, with which
// file checksums before and after, and how it ended).
//
// Several favaproxy processes may share one journal. Every append is one
// write of whole lines (one, or a batch), made under an exclusive flock on
// the journal file and fsynced before Append returns, so lines never
// interleave. Readers take
// no lock: they read complete lines only, and a last line without its
// newline (a write in progress, or one cut short by a crash) is not read
// until it is complete. A writer that finds the file ending in such a
// fragment (its writer died: appends run under the lock) ends it with a
// newline first, so the fragment becomes one unreadable line that readers
// skip and Read reports, and the new record stays whole.
//
// The journal must not be rotated or truncated while favaproxy runs; if it
// is replaced, open journals notice and start over from the new file.
//
// Retention: the file grows with every write and is kept for ever; it is
// the truth. Memory holds, for a bounded number of idempotency keys, only
// where their records are (keys.go), so a long-running process does not
// grow with the journal.
package journal

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofrs/flock"
)

// Outcomes recorded for a write.
const (
	OutcomeOK       = "ok"       // the write was done (Fava or favaproxy answered success)
	OutcomeConflict = "conflict" // answered 409: a conflict favaproxy could not resolve
	OutcomeError    = "error"    // Fava or favaproxy refused or failed the write
	OutcomeReplayed = "replayed" // an idempotent retry answered from an earlier record
	OutcomeMismatch = "mismatch" // an idempotency key reused for another request (422)
	OutcomePartial  = "partial"  // fewer entries with the key in the ledger than were sent
	// OutcomeUnknown: Fava did not answer a keyed add_entries (timeout,
	// broken connection, a reply that is not Fava's) and the key was not in
	// the ledger afterwards: Fava may still write it.
	OutcomeUnknown = "unknown"
	// OutcomeRolledBack: files put back from their pre-images after a
	// write that failed or was interrupted by a crash (or, with note
	// "kept", an interrupted write found complete and kept).
	OutcomeRolledBack = "rolled_back"
	// OutcomeMerged: a stale PUT source that favaproxy merged three-way
	// into the file's current text and wrote.
	OutcomeMerged = "merged"
	// OutcomeRelocated: a source_slice edit of an entry that had moved,
	// which favaproxy found by its checksum and carried out itself.
	OutcomeRelocated = "relocated"
	// OutcomeRefused: a conditional write whose condition did not hold
	// under the ledger lock (If-Match, a balance requirement); nothing was
	// written. Like an ok record, it is the answer a retry of its key
	// replays.
	OutcomeRefused = "refused"
)

// isAnswer reports whether a record of outcome is the answer of its key:
// the one Lookup returns, for retries to replay.
func isAnswer(outcome string) bool { return outcome == OutcomeOK || outcome == OutcomeRefused }

// FileChange is the checksum of a file before and after a write
// (sha256 hex, as Fava computes it; "" for a file that did not exist).
type FileChange struct {
	Path   string `json:"path"`
	Before string `json:"before,omitempty"`
	After  string `json:"after,omitempty"`
}

// Record is one line of the journal: one write request and how it ended.
type Record struct {
	Time        time.Time `json:"time"`
	RequestID   string    `json:"request_id,omitempty"`
	User        string    `json:"user"`
	Ledger      string    `json:"ledger"`
	Route       string    `json:"route"`
	Kind        string    `json:"kind"`
	Key         string    `json:"key,omitempty"`         // idempotency key (the link, with prefix)
	Fingerprint string    `json:"fingerprint,omitempty"` // of the request, for idempotency
	Entries     int       `json:"entries,omitempty"`     // entries sent
	Outcome     string    `json:"outcome"`
	Status      int       `json:"status"` // HTTP status answered
	// Reply is the JSON body of Fava's reply, kept to replay it. It must be
	// valid JSON or empty.
	Reply json.RawMessage `json:"reply,omitempty"`
	Files []FileChange    `json:"files,omitempty"`
	Batch int             `json:"batch,omitempty"` // requests written together in one upstream call
	Note  string          `json:"note,omitempty"`
	// Fence is the fencing token of the ledger lock's hold the record was
	// appended under (a lock on etcd; 0 for a lock file).
	Fence int64 `json:"fence,omitempty"`
}

// ErrClosed is returned by a closed Journal.
var ErrClosed = errors.New("journal is closed")

// errMoved is a remembered record that is no longer where it was: the
// file was rewritten under the journal.
var errMoved = errors.New("a record is no longer where it was read; the journal file was rewritten")

// syncFile is (*os.File).Sync; tests count the calls.
var syncFile = (*os.File).Sync

// Path is the journal file of ledgerFile in dir:
// <dir>/<base name of the ledger>.journal.jsonl.
func Path(dir, ledgerFile string) string {
	return filepath.Join(dir, filepath.Base(ledgerFile)+".journal.jsonl")
}

// Journal is an open journal. Its methods are safe for concurrent use.
type Journal struct {
	path string

	// mu guards every field below, and serializes this Journal's appends:
	// one *flock.Flock does not exclude the goroutines sharing it.
	mu     sync.Mutex
	closed bool
	lock   *flock.Flock
	f      *os.File // read-write, O_APPEND
	offset int64    // bytes of f read into keys: always at a line start
	keys   *keyIndex
	bad    int // unreadable lines seen
	opts   Options
}

// Open opens (creating if needed) the journal of ledgerFile in dir, with
// the default bounds on memory. The directory is created with mode 0700,
// the file with mode 0600.
func Open(dir, ledgerFile string) (*Journal, error) {
	return OpenWith(dir, ledgerFile, Options{})
}

// OpenWith is Open with bounds on the memory of keys (see keys.go).
func OpenWith(dir, ledgerFile string, o Options) (*Journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	path := Path(dir, ledgerFile)
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		// Make the new file's directory entry durable.
		if err := syncDir(dir); err != nil {
			f.Close()
			return nil, fmt.Errorf("open journal: %w", err)
		}
	}
	return &Journal{
		path: path,
		lock: flock.New(path),
		f:    f,
		keys: newKeyIndex(o),
		opts: o,
	}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return syncFile(d)
}

// Path returns the journal's file path.
func (j *Journal) Path() string { return j.path }

// Append writes r as one line and fsyncs it before returning. A zero
// r.Time is set to now (UTC).
func (j *Journal) Append(r Record) error {
	return j.AppendBatch([]Record{r})
}

// AppendBatch writes records as consecutive lines, in order, with one write
// under one flock, and fsyncs them once before returning: a group of
// writes pays one fsync. Zero times are set to now (UTC). Nothing is written
// when a record cannot be encoded.
func (j *Journal) AppendBatch(records []Record) error {
	if len(records) == 0 {
		return nil
	}
	// Replies are kept as sent, < > & unescaped, so that a replay is
	// the same bytes as the first answer.
	var lines bytes.Buffer
	enc := json.NewEncoder(&lines)
	enc.SetEscapeHTML(false)
	now := time.Now().UTC()
	for _, r := range records {
		if r.Time.IsZero() {
			r.Time = now
		}
		if len(r.Reply) > 0 && !json.Valid(r.Reply) {
			return errors.New("append journal record: reply is not valid JSON")
		}
		if err := enc.Encode(r); err != nil { // one line, newline included
			return fmt.Errorf("append journal record: %w", err)
		}
	}
	buf := lines.Bytes()

	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ErrClosed
	}
	if err := j.lock.Lock(); err != nil {
		return fmt.Errorf("lock journal: %w", err)
	}
	defer j.lock.Unlock()
	fi, err := j.reopenIfReplaced()
	if err != nil {
		return err
	}
	if size := fi.Size(); size > 0 {
		last := make([]byte, 1)
		if _, err := j.f.ReadAt(last, size-1); err != nil {
			return fmt.Errorf("append journal record: %w", err)
		}
		if last[0] != '\n' {
			// A writer died mid-line (writers hold the lock): end its
			// fragment so that these records stay lines of their own.
			buf = append([]byte{'\n'}, buf...)
		}
	}
	if _, err := j.f.Write(buf); err != nil {
		return fmt.Errorf("append journal record: %w", err)
	}
	if err := syncFile(j.f); err != nil {
		return fmt.Errorf("sync journal: %w", err)
	}
	return nil
}

// reopenIfReplaced reopens the journal file if the path now names another
// file, and forgets what was read. It returns the stat of the open file.
// j.mu must be held.
func (j *Journal) reopenIfReplaced() (os.FileInfo, error) {
	cur, err := os.Stat(j.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("stat journal: %w", err)
	}
	mine, err := j.f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat journal: %w", err)
	}
	if cur != nil && os.SameFile(cur, mine) {
		return mine, nil
	}
	f, err := os.OpenFile(j.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("reopen journal: %w", err)
	}
	j.f.Close()
	j.f = f
	j.offset, j.keys, j.bad = 0, newKeyIndex(j.opts), 0
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat journal: %w", err)
	}
	return fi, nil
}

// Lookup returns the first record with Outcome "ok" or "refused" for the
// idempotency key: the write that key did, or the conditional write it
// refused, whose reply is the one to replay. Records of other outcomes
// (errors, replays) are not returned; see Latest. It
// reads the lines appended since the last call, by this or any other
// process.
func (j *Journal) Lookup(key string) (Record, bool, error) {
	return j.find(key, func(s *keyState) span { return s.answer })
}

// Latest returns the latest record of any outcome for the key.
func (j *Journal) Latest(key string) (Record, bool, error) {
	return j.find(key, func(s *keyState) span { return s.latest })
}

// find reads the record of key that pick chooses, after reading the lines
// appended since the last call.
func (j *Journal) find(key string, pick func(*keyState) span) (Record, bool, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.refresh(); err != nil {
		return Record{}, false, err
	}
	s, err := j.keys.state(j.f, j.offset, key)
	if err != nil {
		return Record{}, false, fmt.Errorf("read journal: %w", err)
	}
	if s == nil {
		return Record{}, false, nil
	}
	sp := pick(s)
	if sp.n == 0 {
		return Record{}, false, nil
	}
	r, err := readRecord(j.f, sp)
	if err != nil {
		return Record{}, false, fmt.Errorf("read journal: %w", err)
	}
	return r, true, nil
}

// Unreadable returns how many complete lines that are not records the
// journal has met so far (the remains of a writer that crashed mid-line).
func (j *Journal) Unreadable() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.bad
}

// refresh reads the complete lines appended since offset. j.mu must be held.
func (j *Journal) refresh() error {
	if j.closed {
		return ErrClosed
	}
	fi, err := j.reopenIfReplaced()
	if err != nil {
		return err
	}
	size := fi.Size()
	if size < j.offset { // truncated: start over
		j.offset, j.keys, j.bad = 0, newKeyIndex(j.opts), 0
	}
	if size == j.offset {
		return nil
	}
	br := bufio.NewReaderSize(io.NewSectionReader(j.f, j.offset, size-j.offset), 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			return nil // a fragment, if any, waits for its newline
		}
		if err != nil {
			return fmt.Errorf("read journal: %w", err)
		}
		sp := span{off: j.offset, n: int32(len(line))}
		j.offset += int64(len(line))
		r, ok := parseLine(line)
		if !ok {
			j.bad++
			continue
		}
		if r.Key != "" {
			j.keys.note(r.Key, r.Outcome, sp)
		}
	}
}

func parseLine(line []byte) (Record, bool) {
	var r Record
	line = bytes.TrimRight(line, "\n")
	if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &r) != nil {
		return Record{}, false
	}
	return r, true
}

// Close closes the journal.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	return errors.Join(j.f.Close(), j.lock.Close())
}

// Filter selects records for Read. Zero fields select everything.
type Filter struct {
	Since time.Time // records at or after Since
	User  string    // records of this user
	Key   string    // records of this idempotency key
}

func (f Filter) match(r Record) bool {
	return (f.Since.IsZero() || !r.Time.Before(f.Since)) &&
		(f.User == "" || r.User == f.User) &&
		(f.Key == "" || r.Key == f.Key)
}

// CorruptError reports complete lines of a journal that are not records.
// Read returns it after reading everything else.
type CorruptError struct {
	Path  string
	Lines []int // 1-based line numbers
}

func (e *CorruptError) Error() string {
	nums := make([]string, len(e.Lines))
	for i, n := range e.Lines {
		nums[i] = strconv.Itoa(n)
	}
	return fmt.Sprintf("journal %s: unreadable lines %s", e.Path, strings.Join(nums, ", "))
}

// Read calls fn for each record of the journal file at path that f
// selects, in order. It stops at the first error fn returns and returns
// it. An incomplete last line is ignored; other unreadable lines are
// skipped and reported at the end as a *CorruptError.
func Read(path string, f Filter, fn func(Record) error) error {
	file, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read journal: %w", err)
	}
	defer file.Close()
	br := bufio.NewReaderSize(file, 64<<10)
	var corrupt []int
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read journal: %w", err)
		}
		r, ok := parseLine(line)
		if !ok {
			corrupt = append(corrupt, n)
			continue
		}
		if f.match(r) {
			if err := fn(r); err != nil {
				return err
			}
		}
	}
	if len(corrupt) > 0 {
		return &CorruptError{Path: path, Lines: corrupt}
	}
	return nil
}
