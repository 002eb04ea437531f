package ledger

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/fava"
)

// Ledger versions, and writes conditional on them.
//
// A ledger's version is a hash over the paths and checksums of all of its
// files (the main file and every include), read from the index: any change
// to any file, by favaproxy or anyone else, is a new version. Reads of the
// ledger carry it as their ETag (a strong one: it names the ledger's
// content, whatever page shows it). A write with If-Match is carried out
// only if, once the ledger lock is held, the ledger is still at one of the
// versions it names (or, for "*", at any); otherwise it is answered 412
// with the current version. If-None-Match: * on a write always fails: the
// ledger exists. A conditional add_entries is never batched with other
// requests, whose writes would change the version it was checked against.

// Precondition is what a write's If-Match and If-None-Match headers ask.
type Precondition struct {
	// IfMatch are the entity tags of If-Match, quoted as sent; "*" for any.
	// Nil when the header is absent.
	IfMatch []string
	// IfNoneMatchAny is If-None-Match: *.
	IfNoneMatchAny bool
}

// Set reports whether p asks anything.
func (p Precondition) Set() bool { return p.IfMatch != nil || p.IfNoneMatchAny }

// ParsePrecondition reads the If-Match and If-None-Match headers of a
// write (RFC 9110 13.1). A weak tag in If-Match never matches (strong
// comparison); If-None-Match other than "*" has no meaning for a write and
// is refused, like a malformed list.
func ParsePrecondition(h http.Header) (Precondition, error) {
	var p Precondition
	if vs, ok := h["If-Match"]; ok {
		tags, err := entityTags(strings.Join(vs, ","))
		if err != nil {
			return p, favaproxy.FieldErrorf("If-Match", "%v", err)
		}
		p.IfMatch = tags
	}
	if vs, ok := h["If-None-Match"]; ok {
		if v := strings.TrimSpace(strings.Join(vs, ",")); v != "*" {
			return p, favaproxy.FieldErrorf("If-None-Match", "only * applies to a write")
		}
		p.IfNoneMatchAny = true
	}
	return p, nil
}

// entityTags splits a list of entity tags: "*" alone, or quoted tags,
// possibly weak (W/"…").
func entityTags(v string) ([]string, error) {
	v = strings.TrimSpace(v)
	if v == "*" {
		return []string{"*"}, nil
	}
	var out []string
	for v != "" {
		weak := strings.HasPrefix(v, "W/")
		rest := strings.TrimPrefix(v, "W/")
		if !strings.HasPrefix(rest, `"`) {
			return nil, errBadTag
		}
		end := strings.IndexByte(rest[1:], '"')
		if end < 0 {
			return nil, errBadTag
		}
		tag := rest[:end+2]
		for _, c := range []byte(tag[1 : len(tag)-1]) {
			if c < 0x21 || c == 0x7f {
				return nil, errBadTag
			}
		}
		if !weak {
			out = append(out, tag)
		}
		v = strings.TrimSpace(rest[end+2:])
		if v == "" {
			break
		}
		if v[0] != ',' {
			return nil, errBadTag
		}
		v = strings.TrimSpace(v[1:])
	}
	if out == nil {
		out = []string{} // only weak tags: never matches
	}
	return out, nil
}

var errBadTag = favaproxy.Errorf(favaproxy.EInvalid, "not a list of entity tags")

// version returns the ledger version of a snapshot: a strong entity tag.
func (s snapshot) version() string {
	paths := make([]string, 0, len(s.sums))
	for p := range s.sums {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	h := sha256.New()
	for _, p := range paths {
		h.Write([]byte(p))
		h.Write([]byte{0})
		h.Write([]byte(s.sums[p]))
		h.Write([]byte{0})
	}
	return `"` + hex.EncodeToString(h.Sum(nil)[:16]) + `"`
}

// Version returns the ledger's version now (an entity tag), for the ETag of
// a read; the caller holds the ledger lock, shared or exclusive. Reads are
// many: the version is remembered with the size, time and identity of
// every file it was computed from, and computed again only when one of
// them differs (a stat per file instead of a refresh of the index).
func (l *Ledger) Version() (string, error) {
	if c := l.vcache.Load(); c != nil && c.fresh() {
		return c.version, nil
	}
	files := l.index.Ledger().Files
	stamps := statAll(files)
	s := l.snapshot()
	if s.err != nil {
		return s.version(), s.err
	}
	c := &versionCache{files: files, stamps: stamps, version: s.version()}
	if slices.Equal(files, l.index.Ledger().Files) && !c.racy(time.Now()) {
		l.vcache.Store(c)
	}
	return c.version, nil
}

// versionCache is a version and the files it was computed from.
type versionCache struct {
	files   []string
	stamps  []fileStamp
	version string
}

// fileStamp is what a stat tells of a file's content changing.
type fileStamp struct {
	size  int64
	mtime int64
	ino   uint64
	ok    bool
}

func statAll(files []string) []fileStamp {
	out := make([]fileStamp, len(files))
	for i, f := range files {
		out[i] = statFile(f)
	}
	return out
}

// statFile returns f's stamp; ok is false when it cannot be stat'ed.
func statFile(f string) fileStamp {
	var st unix.Stat_t
	if err := unix.Stat(f, &st); err != nil {
		return fileStamp{}
	}
	return fileStamp{size: st.Size, mtime: st.Mtim.Nano(), ino: st.Ino, ok: true}
}

// fresh reports whether no file changed since c was computed. It runs on
// every read, so it stats into a value and allocates nothing else.
func (c *versionCache) fresh() bool {
	for i, f := range c.files {
		if statFile(f) != c.stamps[i] {
			return false
		}
	}
	return true
}

// racy reports whether a file was modified so recently that another
// change within the file system's time granularity could leave its stamp
// as it is (as git's racy index entries): such a version is not kept.
func (c *versionCache) racy(now time.Time) bool {
	for _, st := range c.stamps {
		if !st.ok || now.UnixNano()-st.mtime < int64(racyWindow) {
			return true
		}
	}
	return false
}

// racyWindow is more than the coarsest file time granularity of Linux file
// systems' writes (a scheduler tick).
const racyWindow = 50 * time.Millisecond

// holds reports whether p holds for the ledger at version.
func (p Precondition) holds(version string) bool {
	if p.IfNoneMatchAny {
		return false
	}
	if p.IfMatch == nil {
		return true
	}
	for _, t := range p.IfMatch {
		if t == "*" || t == version {
			return true
		}
	}
	return false
}

// preconditionFailed is the 412 answer to a write whose precondition does
// not hold at version.
func (l *Ledger) preconditionFailed(version string) *Response {
	status, body := fava.PreconditionReply(l.styleOf(), "the ledger changed: it is no longer at the version the request names (If-Match)", version)
	h := jsonHeader()
	h.Set("ETag", version)
	return &Response{Status: status, Header: h, Body: body, Refused: "precondition_failed"}
}

// checkPrecondition checks req's precondition against the ledger as its
// audit snapshot, taken once the lock was held, saw it: nil when it holds
// (or there is none), else the 412 answer.
func (l *Ledger) checkPrecondition(req *Request) *Response {
	if !req.Precondition.Set() || req.audit == nil || req.audit.before == nil {
		return nil
	}
	if v := req.audit.before.version(); !req.Precondition.holds(v) {
		return l.preconditionFailed(v)
	}
	return nil
}
