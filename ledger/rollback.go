package ledger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/favaproxy/favaproxy/beancount"
	"github.com/favaproxy/favaproxy/checksum"
	"github.com/favaproxy/favaproxy/durable"
)

// The rollback journal: crash-safe writes in the style of SQLite's.
//
// Fava rewrites a file in place (truncate, then write; no temporary file,
// no fsync), so a Fava killed mid-write leaves a torn file, and a write it
// answered can vanish on power loss. Before a write is sent to Fava,
// holding the ledger lock, favaproxy copies every file the write may change
// into the rollback directory (<state dir>/<ledger file>.rollback), fsyncs
// the copies and the directory, then writes manifest.json the same way: from
// then on the rollback is hot. After Fava's answer the write is settled:
//
//   - Fava answered success: the result is verified (add_entries: every
//     file still holds its pre-image's lines, in order, and every key sent
//     is found; PUT source: the file's checksum is the one expected), every
//     changed file and its directory are fsynced, and only then is the
//     client answered. A result that fails verification is rolled back.
//   - Fava refused (a JSON error): it normally wrote nothing; a file that
//     changed anyway (a batch refused after some of its entries were
//     written) is rolled back, so "nothing was written" is true.
//   - Fava did not answer (died, reset, timed out, garbage): once the files
//     have stayed unchanged for durability.quiet, a complete write (all its
//     idempotency keys present and the pre-images' lines kept, or the
//     expected checksum reached) is kept and fsynced; anything else is
//     rolled back.
//
// Rolling back replaces each file that differs from its pre-image
// atomically (temporary file, fsync, rename, fsync of the directory), after
// keeping what it replaces beside the rollback (<file>.<time>.replaced in
// the state directory). Removing manifest.json is the commit point; the
// copies go after it. A rollback left hot by a process that died — found
// when a ledger is opened, by the next writer under the lock, or by
// `favaproxy recover` — is settled by the same rules, after the same quiet
// wait (the dead process's Fava request may still be running).

// manifestName is the file whose presence makes a rollback hot.
const manifestName = "manifest.json"

// manifest describes one write's pre-images.
type manifest struct {
	Version int       `json:"version"`
	Started time.Time `json:"started"`
	PID     int       `json:"pid"`
	Host    string    `json:"host,omitempty"`
	Kind    string    `json:"kind"`
	// RequestIDs are the requests the write carries (several for a batch).
	RequestIDs []string `json:"request_ids,omitempty"`
	// Keys are the idempotency keys (links) sent, with their entry counts.
	Keys map[string]int `json:"keys,omitempty"`
	// Keyed describes the keyed requests, so that a write kept after a
	// crash is recorded in the journal as they would have been.
	Keyed []keyedRequest `json:"keyed,omitempty"`
	// Insert is set for add_entries: Fava only inserts, so every line of a
	// pre-image stays, in order, in a complete result. Entries counts the
	// entries sent, and AllKeyed is set when every request had a key.
	Insert   bool `json:"insert,omitempty"`
	Entries  int  `json:"entries,omitempty"`
	AllKeyed bool `json:"all_keyed,omitempty"`
	// SliceOld and SliceNew are set for a PUT source_slice: once it is
	// complete, no entry has the old slice and one has the new.
	SliceOld string     `json:"slice_old,omitempty"`
	SliceNew string     `json:"slice_new,omitempty"`
	Files    []preimage `json:"files"`
	// Deadline is when the request can no longer be running at Fava,
	// set when favaproxy stops waiting for Fava's answer; zero while it
	// waits (its sender would wait at most timeouts.upstream).
	Deadline time.Time `json:"deadline,omitzero"`
}

// keyedRequest is what the journal records of a keyed add_entries.
type keyedRequest struct {
	Key         string `json:"key"`
	RequestID   string `json:"request_id"`
	User        string `json:"user"`
	Fingerprint string `json:"fingerprint"`
	Entries     int    `json:"entries"`
}

// preimage is one file's state before a write.
type preimage struct {
	// Path is the ledger file, as the ledger names it; Real the file it
	// resolves to (symlinks followed), the one restored.
	Path string `json:"path"`
	Real string `json:"real"`
	// Copy is the copy's name in the rollback directory; "" when the file
	// did not exist before the write.
	Copy string `json:"copy,omitempty"`
	// Raw is the sha256 (hex) of the file's bytes.
	Raw string `json:"raw"`
	// Expect is the checksum (Fava's) of the file after a complete write,
	// when it is known (PUT source).
	Expect string `json:"expect,omitempty"`
}

// rollbacks is the rollback directory of one ledger.
type rollbacks struct {
	dir  string
	sync func(*os.File) error
}

func (r *rollbacks) manifestPath() string { return filepath.Join(r.dir, manifestName) }

// hot reports whether a rollback is hot, and reads its manifest.
func (r *rollbacks) hot() (*manifest, error) {
	b, err := os.ReadFile(r.manifestPath())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read rollback: %w", err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("read rollback %s: %w", r.manifestPath(), err)
	}
	return &m, nil
}

// begin takes the pre-images of files and makes the rollback hot. Files
// that do not exist are recorded as such (a rollback removes them).
func (r *rollbacks) begin(m *manifest, files []string, expect map[string]string) error {
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return fmt.Errorf("begin rollback: %w", err)
	}
	m.Version, m.PID = 1, os.Getpid()
	m.Host, _ = os.Hostname()
	if m.Started.IsZero() {
		m.Started = time.Now().UTC()
	}
	m.Files = m.Files[:0]
	for i, f := range files {
		p := preimage{Path: f, Real: durable.RealPath(f), Expect: expect[f]}
		b, err := os.ReadFile(p.Real)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("begin rollback: %w", err)
		default:
			p.Copy = strconv.Itoa(i) + ".pre"
			p.Raw = rawSum(b)
			if err := durable.WriteFile(filepath.Join(r.dir, p.Copy), b, 0o600, r.sync); err != nil {
				return fmt.Errorf("begin rollback: %w", err)
			}
		}
		m.Files = append(m.Files, p)
	}
	if err := r.rewrite(m); err != nil {
		return fmt.Errorf("begin rollback: %w", err)
	}
	return nil
}

// rewrite writes m as the manifest, atomically and durably.
func (r *rollbacks) rewrite(m *manifest) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	tmp := r.manifestPath() + ".tmp"
	if err := durable.WriteFile(tmp, b, 0o600, r.sync); err != nil {
		return err
	}
	if err := os.Rename(tmp, r.manifestPath()); err != nil {
		return err
	}
	return durable.SyncDir(r.dir, r.sync)
}

// commit ends the rollback: removing the manifest is the commit point; the
// copies go after it.
func (r *rollbacks) commit() error {
	if err := os.Remove(r.manifestPath()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("commit rollback: %w", err)
	}
	if err := durable.SyncDir(r.dir, r.sync); err != nil {
		return fmt.Errorf("commit rollback: %w", err)
	}
	entries, _ := os.ReadDir(r.dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".pre") || strings.HasSuffix(e.Name(), ".tmp") {
			os.Remove(filepath.Join(r.dir, e.Name()))
		}
	}
	return nil
}

// changed reports which files of m differ from their pre-images now.
func changed(m *manifest) ([]preimage, error) {
	var out []preimage
	for _, p := range m.Files {
		b, err := os.ReadFile(p.Real)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if p.Copy != "" {
				out = append(out, p)
			}
		case err != nil:
			return nil, err
		case p.Copy == "" || rawSum(b) != p.Raw:
			out = append(out, p)
		}
	}
	return out, nil
}

// restore puts back every file of m that differs from its pre-image,
// keeping what it replaces beside the rollback, and returns the files it
// restored. A pre-image copy whose checksum is not the recorded one is not
// used: the file is left as it is and restore fails.
func (r *rollbacks) restore(m *manifest) ([]string, error) {
	diff, err := changed(m)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	var restored []string
	stamp := time.Now().UTC().Format("20060102T150405.000000000")
	for _, p := range diff {
		if cur, err := os.ReadFile(p.Real); err == nil {
			keep := filepath.Join(filepath.Dir(r.dir), filepath.Base(p.Real)+"."+stamp+".replaced")
			if err := durable.WriteFile(keep, cur, 0o600, r.sync); err != nil {
				return restored, fmt.Errorf("restore %s: keep the replaced text: %w", p.Path, err)
			}
		}
		if p.Copy == "" {
			if err := os.Remove(p.Real); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return restored, fmt.Errorf("restore %s: %w", p.Path, err)
			}
			restored = append(restored, p.Path)
			continue
		}
		pre, err := os.ReadFile(filepath.Join(r.dir, p.Copy))
		if err != nil {
			return restored, fmt.Errorf("restore %s: %w", p.Path, err)
		}
		if rawSum(pre) != p.Raw {
			return restored, fmt.Errorf("restore %s: the pre-image copy is damaged (checksum %s, recorded %s)", p.Path, rawSum(pre), p.Raw)
		}
		if err := durable.ReplaceFile(p.Real, pre, r.sync); err != nil {
			return restored, fmt.Errorf("restore %s: %w", p.Path, err)
		}
		restored = append(restored, p.Path)
	}
	if err := durable.SyncDir(filepath.Dir(r.dir), r.sync); err != nil {
		return restored, fmt.Errorf("restore: %w", err)
	}
	return restored, nil
}

// fsyncChanged fsyncs every file of m that changed, and the directories
// they are in.
func (r *rollbacks) fsyncChanged(m *manifest) error {
	diff, err := changed(m)
	if err != nil {
		return err
	}
	dirs := map[string]bool{}
	for _, p := range diff {
		if err := durable.SyncPath(p.Real, r.sync); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		dirs[filepath.Dir(p.Real)] = true
	}
	for d := range dirs {
		if err := durable.SyncDir(d, r.sync); err != nil {
			return err
		}
	}
	return nil
}

// complete reports whether the write m describes is complete as the files
// stand, when Fava's answer was lost. add_entries: every request carried an
// idempotency key, every pre-image's lines are kept in order and every key
// is found as often as it was sent. A slice edit: the old slice is gone
// and the new one found once. Other writes: every expected checksum is
// reached and every other file is unchanged. A write with neither keys
// nor expectations cannot be shown complete.
func (r *rollbacks) complete(m *manifest, ix *beancount.Index) bool {
	if m.Insert {
		return m.AllKeyed && len(m.Keys) > 0 && r.keptAll(m) && keysFound(m, ix)
	}
	if m.SliceNew != "" {
		olds, news := 0, 0
		for _, p := range m.Files {
			cur, err := os.ReadFile(p.Real)
			if err != nil {
				return false
			}
			text := string(checksum.Normalize(cur))
			olds += len(beancount.FindSlices(text, m.SliceOld))
			news += len(beancount.FindSlices(text, m.SliceNew))
		}
		return olds == 0 && news == 1
	}
	expects := false
	for _, p := range m.Files {
		cur, err := os.ReadFile(p.Real)
		switch {
		case err != nil:
			return false
		case p.Expect != "":
			expects = true
			if checksum.String(string(checksum.Normalize(cur))) != p.Expect {
				return false
			}
		case rawSum(cur) != p.Raw:
			return false
		}
	}
	return expects
}

// verified reports whether a write Fava answered with success shows in
// the files. add_entries: every key is found, and some file changed when
// entries were sent. Other writes: expected checksums are reached; a write
// without expectations (a slice edit, a document) has nothing to be
// checked against.
func (r *rollbacks) verified(m *manifest, ix *beancount.Index) bool {
	if m.Insert {
		if !keysFound(m, ix) {
			return false
		}
		if m.Entries == 0 {
			return true
		}
		diff, err := changed(m)
		return err == nil && len(diff) > 0
	}
	if m.SliceNew != "" {
		return r.complete(m, ix)
	}
	for _, p := range m.Files {
		if p.Expect != "" {
			return r.complete(m, ix)
		}
	}
	return true
}

// keptAll reports whether every file of m still holds its pre-image's
// lines, in order.
func (r *rollbacks) keptAll(m *manifest) bool {
	for _, p := range m.Files {
		if p.Copy == "" {
			continue
		}
		pre, err1 := os.ReadFile(filepath.Join(r.dir, p.Copy))
		cur, err2 := os.ReadFile(p.Real)
		if err1 != nil || err2 != nil || !kept(pre, cur) {
			return false
		}
	}
	return true
}

// keysFound reports whether every key of m is in the ledger as often as
// it was sent.
func keysFound(m *manifest, ix *beancount.Index) bool {
	if len(m.Keys) == 0 {
		return true
	}
	if err := ix.Refresh(); err != nil {
		return false
	}
	for key, n := range m.Keys {
		if keyCount(ix, key) < n {
			return false
		}
	}
	return true
}

// kept reports whether every line of pre is in cur, in order: cur is pre
// with lines inserted, as Fava's add_entries leaves a file.
func kept(pre, cur []byte) bool {
	pl := bytes.Split(checksum.Normalize(pre), []byte("\n"))
	cl := bytes.Split(checksum.Normalize(cur), []byte("\n"))
	j := 0
	for _, line := range pl {
		for j < len(cl) && !bytes.Equal(cl[j], line) {
			j++
		}
		if j == len(cl) {
			return false
		}
		j++
	}
	return true
}

// waitQuiet waits until no file of m has changed for quiet (size, time
// and identity unchanged), or ctx ends.
func waitQuiet(ctx context.Context, m *manifest, quiet time.Duration) {
	files := make([]string, len(m.Files))
	for i, p := range m.Files {
		files[i] = p.Real
	}
	last, since := statAll(files), time.Now()
	tick := max(quiet/20, time.Millisecond)
	for time.Since(since) < quiet {
		select {
		case <-ctx.Done():
			return
		case <-time.After(tick):
		}
		if now := statAll(files); !slices.Equal(now, last) {
			last, since = now, time.Now()
		}
	}
}

// rawSum is the sha256 (hex) of b as it is on disk.
func rawSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// keyCount counts the entries of the index's ledger that carry key:
// transactions with the link, and directives whose own metadata under the
// configured key has it as value.
func keyCount(ix *beancount.Index, key string) int {
	n := 0
	for _, o := range ix.Link(key) {
		if o.Kind == beancount.KindTransaction {
			n++
		}
	}
	for _, o := range ix.MetaValue(key) {
		if o.Kind != beancount.KindTransaction {
			n++
		}
	}
	return n
}
