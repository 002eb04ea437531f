package auth

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// bcrypt hashes are exactly this long: "$2y$", two cost digits, "$", 22
// characters of salt and 31 of hash.
const bcryptHashLen = 60

// bcryptMaxPassword is the most password bytes bcrypt looks at; it ignores
// the rest, so longer passwords are refused rather than silently truncated.
const bcryptMaxPassword = 72

// Cache of successful verifications: a browser sends its credentials with
// every request, and one bcrypt comparison costs tens of milliseconds.
const (
	basicCacheTTL = 5 * time.Minute
	basicCacheMax = 1024
)

// Basic authenticates HTTP Basic credentials against an htpasswd file whose
// hashes are all bcrypt ($2y$, $2a$ or $2b$, as made by `htpasswd -B`).
//
// The file is read again when its modification time or size changes,
// checked at most once per checkEvery. If it has become unreadable or
// malformed, Authenticate fails with an error that does not wrap
// ErrUnauthorized (favaproxy answers 500) until the file is fixed: a
// revoked user must not keep access because an edit went wrong.
//
// An unknown user costs one bcrypt comparison against a dummy hash, as a
// known one does, so response times do not tell which users exist.
type Basic struct {
	path string
	// checkEvery is the least time between two looks at the file.
	checkEvery time.Duration
	now        func() time.Time
	// cacheKey keys the cache of successful verifications (HMAC-SHA256 of
	// user and password), so the cache holds no password.
	cacheKey []byte

	// mu guards every field below. bcrypt comparisons run without it.
	mu      sync.Mutex
	users   map[string][]byte // user → bcrypt hash
	dummy   []byte            // bcrypt hash of a random password at the file's highest cost
	dummies map[int][]byte    // dummy hashes by cost, made once each
	modTime time.Time         // of the file as last read
	size    int64
	checked time.Time // of the last look at the file
	loadErr error     // of the last read; nil when users is current
	gen     uint64    // counts reads, so a verification started before one is not cached after it
	cache   map[[sha256.Size]byte]basicCached
	// fails counts failed attempts per peer (limit.go).
	fails *failLimiter
}

type basicCached struct {
	user    string
	expires time.Time
}

// NewBasic reads the htpasswd file at path. It fails, naming the line, if a
// line is malformed or its hash is not bcrypt.
func NewBasic(htpasswdFile string) (*Basic, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("basic auth: %w", err)
	}
	b := &Basic{
		path:       htpasswdFile,
		checkEvery: time.Second,
		now:        time.Now,
		cacheKey:   key,
		dummies:    map[int][]byte{},
		fails:      newFailLimiter(time.Now),
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.loadLocked(); err != nil {
		return nil, err
	}
	b.checked = b.now()
	return b, nil
}

// Challenge returns the WWW-Authenticate value of a 401.
func (b *Basic) Challenge() string {
	return `Basic realm="` + Realm + `", charset="UTF-8"`
}

// Authenticate returns the user of the request's Basic credentials.
func (b *Basic) Authenticate(r *http.Request) (string, error) {
	h, err := authorization(r)
	if err != nil {
		return "", err
	}
	user, pass, ok := parseBasic(h)
	if !ok {
		return "", fmt.Errorf("malformed basic credentials: %w", ErrUnauthorized)
	}
	if len(pass) > bcryptMaxPassword {
		// Decided on the length alone, before the user is looked up.
		return "", fmt.Errorf("password longer than %d bytes: %w", bcryptMaxPassword, ErrUnauthorized)
	}

	key := b.cacheKeyFor(user, pass) // cacheKey never changes: no lock needed

	b.mu.Lock()
	if err := b.refreshLocked(); err != nil {
		b.mu.Unlock()
		return "", err
	}
	now := b.now()
	if c, ok := b.cache[key]; ok && c.user == user && now.Before(c.expires) {
		b.mu.Unlock()
		return user, nil
	}
	hash, known := b.users[user]
	if !known {
		hash = b.dummy
	}
	gen := b.gen
	b.mu.Unlock()

	// A peer that failed too often is refused without a check, and checks
	// run one per core at most (limit.go).
	peer := peerOf(r.RemoteAddr)
	if err := b.fails.allow(peer); err != nil {
		return "", fmt.Errorf("%w: %w", err, ErrUnauthorized)
	}
	err = withCheckSlot(r.Context(), func() error { return bcrypt.CompareHashAndPassword(hash, []byte(pass)) })
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return "", fmt.Errorf("check password: %w: %w", err, ErrUnauthorized)
	}
	if err != nil || !known {
		b.fails.failed(peer)
		return "", fmt.Errorf("bad user or password: %w", ErrUnauthorized)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.gen == gen {
		if len(b.cache) >= basicCacheMax {
			clear(b.cache)
		}
		b.cache[key] = basicCached{user: user, expires: now.Add(basicCacheTTL)}
	}
	return user, nil
}

// parseBasic parses `Basic base64(user:password)`; the scheme is
// case-insensitive (RFC 7617, RFC 9110 section 11.1).
func parseBasic(h string) (user, pass string, ok bool) {
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	rest = strings.TrimLeft(rest, " ")
	raw, err := base64.StdEncoding.Strict().DecodeString(rest)
	if err != nil {
		return "", "", false
	}
	user, pass, ok = strings.Cut(string(raw), ":")
	if !ok || checkUser(user) != nil {
		return "", "", false
	}
	return user, pass, true
}

func (b *Basic) cacheKeyFor(user, pass string) [sha256.Size]byte {
	m := hmac.New(sha256.New, b.cacheKey)
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(pass))
	var k [sha256.Size]byte
	m.Sum(k[:0])
	return k
}

// refreshLocked reads the file again if it changed since the last read,
// looking at most once per checkEvery. It returns the error of the last
// read, if that failed.
func (b *Basic) refreshLocked() error {
	now := b.now()
	if d := now.Sub(b.checked); d >= 0 && d < b.checkEvery {
		return b.loadErr
	}
	b.checked = now
	fi, err := os.Stat(b.path)
	if err != nil {
		b.loadErr = fmt.Errorf("basic auth: %w", err)
		return b.loadErr
	}
	if b.loadErr == nil && fi.Size() == b.size && fi.ModTime().Equal(b.modTime) {
		return nil
	}
	return b.loadLocked()
}

// loadLocked reads the file and replaces users; on failure it records and
// returns the error and keeps nobody.
func (b *Basic) loadLocked() error {
	users, fi, err := readHtpasswd(b.path)
	if err == nil {
		err = b.setDummyLocked(users)
	}
	b.gen++
	b.cache = map[[sha256.Size]byte]basicCached{}
	if err != nil {
		b.users, b.loadErr = nil, err
		return err
	}
	b.users, b.loadErr = users, nil
	b.modTime, b.size = fi.ModTime(), fi.Size()
	return nil
}

// setDummyLocked sets dummy to a hash at the highest cost in users, so that
// an unknown user costs at least as much as a known one.
func (b *Basic) setDummyLocked(users map[string][]byte) error {
	cost := bcrypt.DefaultCost
	if len(users) > 0 {
		cost = bcrypt.MinCost
		for _, h := range users {
			c, _ := bcrypt.Cost(h) // checked by readHtpasswd
			cost = max(cost, c)
		}
	}
	if d, ok := b.dummies[cost]; ok {
		b.dummy = d
		return nil
	}
	pw := make([]byte, 16)
	if _, err := rand.Read(pw); err != nil {
		return fmt.Errorf("basic auth: %w", err)
	}
	d, err := bcrypt.GenerateFromPassword(pw, cost)
	if err != nil {
		return fmt.Errorf("basic auth: dummy hash: %w", err)
	}
	b.dummies[cost], b.dummy = d, d
	return nil
}

// readHtpasswd parses an htpasswd file: one user:hash per line; blank lines
// and lines starting with # are skipped.
func readHtpasswd(path string) (map[string][]byte, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("basic auth: %w", err)
	}
	defer f.Close()
	// The stat of the file actually read: if it is replaced meanwhile, the
	// next check sees a change and reads it again.
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("basic auth: %w", err)
	}
	users := map[string][]byte{}
	var errs []error
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), " \t\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lineErr := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("htpasswd %s line %d: %s", path, n, fmt.Sprintf(format, args...)))
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok {
			lineErr("no ':' between user and hash")
			continue
		}
		if err := checkUser(user); err != nil {
			lineErr("%v", err)
			continue
		}
		if !strings.HasPrefix(hash, "$2y$") && !strings.HasPrefix(hash, "$2a$") && !strings.HasPrefix(hash, "$2b$") {
			lineErr("user %q: hash is not bcrypt ($2y$, $2a$ or $2b$; make it with htpasswd -B)", user)
			continue
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil || len(hash) != bcryptHashLen {
			lineErr("user %q: malformed bcrypt hash", user)
			continue
		}
		if _, dup := users[user]; dup {
			lineErr("user %q appears twice", user)
			continue
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("htpasswd %s: %w", path, err))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return users, fi, nil
}
