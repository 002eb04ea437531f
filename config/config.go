// Package config holds favaproxy's configuration as a plain struct, its
// defaults and its validation. It knows nothing of files, flags or the
// environment: cmd/favaproxy fills a Config from those (with viper) and every
// other package receives plain values.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/favaproxy/favaproxy"
	"github.com/favaproxy/favaproxy/fava"
)

// Config is the whole configuration of a favaproxy process. The mapstructure
// tags are the keys of the YAML file; environment variables are the same keys
// upper-cased with "." and "-" turned into "_" and prefixed FAVAPROXY_.
type Config struct {
	// Listen is the address favaproxy serves on. Default 127.0.0.1:5001.
	Listen string `mapstructure:"listen"`
	// Upstream is Fava's base URL, optionally with the path prefix Fava runs
	// under (fava --prefix). Default http://127.0.0.1:5000.
	Upstream string `mapstructure:"upstream"`
	// Ledgers are the ledgers Fava serves. At least one is required.
	Ledgers []Ledger `mapstructure:"ledgers"`
	// LockTimeout bounds how long a request waits for a ledger's lock before
	// it is answered 503 with Retry-After. Default 30s.
	LockTimeout time.Duration `mapstructure:"lock_timeout"`
	// ShutdownGrace bounds how long in-flight requests may finish after
	// SIGTERM. Default 30s.
	ShutdownGrace time.Duration `mapstructure:"shutdown_grace"`
	// ReadOnly refuses every write with 403.
	ReadOnly bool `mapstructure:"read_only"`

	Identity    Identity    `mapstructure:"identity"`
	Timeouts    Timeouts    `mapstructure:"timeouts"`
	Limits      Limits      `mapstructure:"limits"`
	Retry       Retry       `mapstructure:"retry"`
	Batch       Batch       `mapstructure:"batch"`
	Idempotency Idempotency `mapstructure:"idempotency"`
	Merge       Merge       `mapstructure:"merge"`
	Durability  Durability  `mapstructure:"durability"`
	Lock        Lock        `mapstructure:"lock"`
	Auth        Auth        `mapstructure:"auth"`
	Log         Log         `mapstructure:"log"`
	Metrics     Metrics     `mapstructure:"metrics"`
}

// Ledger is one Beancount ledger served by Fava.
type Ledger struct {
	// File is the ledger's main file.
	File string `mapstructure:"file"`
	// Slug is the ledger's URL segment in Fava. Empty means derive it as
	// Fava does (from the title option, else from the file path).
	Slug string `mapstructure:"slug"`
	// LockFile is the file that carries the ledger's cross-process lock.
	// Empty means <dir>/.<file name>.favaproxy.lock beside the ledger.
	LockFile string `mapstructure:"lock_file"`
	// StateDir holds the ledger's journal. Empty means <dir>/.favaproxy.
	StateDir string `mapstructure:"state_dir"`
	// LockKey names the ledger's lock on etcd, under lock.etcd.prefix; it
	// must be the same on every host. Empty means the ledger file's base
	// name.
	LockKey string `mapstructure:"lock_key"`
	// FenceFile holds the fencing token of the latest holder of the
	// ledger's lock on etcd. Empty means <dir>/.<file name>.favaproxy.fence
	// beside the ledger.
	FenceFile string `mapstructure:"fence_file"`
	// AccountsFile is where add_account inserts open directives. Empty
	// means the main file.
	AccountsFile string `mapstructure:"accounts_file"`
}

// Identity says who a request is from.
type Identity struct {
	// Header carries the user name set by a trusted auth proxy.
	// Default X-Remote-User.
	Header string `mapstructure:"header"`
	// TrustedProxies are the peer addresses or CIDRs whose identity header
	// (and X-Forwarded-*) is believed. Default none.
	TrustedProxies []string `mapstructure:"trusted_proxies"`
}

// Timeouts of the server and of calls to Fava.
type Timeouts struct {
	// ReadHeader bounds reading a request's headers. Default 10s.
	ReadHeader time.Duration `mapstructure:"read_header"`
	// Read bounds reading a whole request, body included. Default 60s.
	Read time.Duration `mapstructure:"read"`
	// Idle bounds keep-alive connections between requests. Default 120s.
	Idle time.Duration `mapstructure:"idle"`
	// Dial bounds connecting to Fava. Default 5s.
	Dial time.Duration `mapstructure:"dial"`
	// Upstream bounds waiting for Fava's response headers. Default 120s.
	Upstream time.Duration `mapstructure:"upstream"`
	// Stall is the longest a client may stop reading the answer to a read
	// of a ledger, which holds the ledger's shared lock until it is sent:
	// past it the answer is dropped and the lock released, so a stalled
	// client cannot hold every writer off. Default 10s.
	Stall time.Duration `mapstructure:"stall"`
}

// Limits on request sizes and queues.
type Limits struct {
	// JSONBody caps JSON write bodies (add_entries, add_account, slices).
	// Default 1 MiB.
	JSONBody int64 `mapstructure:"json_body"`
	// SourceBody caps PUT source bodies. Default 32 MiB.
	SourceBody int64 `mapstructure:"source_body"`
	// UploadBody caps document and import uploads. Default 64 MiB.
	UploadBody int64 `mapstructure:"upload_body"`
	// HeaderBytes caps request headers. Default 64 KiB.
	HeaderBytes int `mapstructure:"header_bytes"`
	// QueueDepth bounds writes waiting for one ledger; more get 503.
	// Default 256.
	QueueDepth int `mapstructure:"queue_depth"`
	// BufferBytes bounds the write bodies held in memory at once (every
	// body is read whole before its write waits for the lock); a body
	// that would pass it gets 503 with Retry-After. At least UploadBody.
	// Default 96 MiB: one upload of the largest size and the JSON bodies
	// around it.
	BufferBytes int64 `mapstructure:"buffer_bytes"`
}

// Retry bounds retries of writes after a conflict or a failed connection.
type Retry struct {
	// MaxAttempts is the most attempts of one write. Default 5.
	MaxAttempts int `mapstructure:"max_attempts"`
	// InitialInterval is the first backoff wait. Default 50ms.
	InitialInterval time.Duration `mapstructure:"initial_interval"`
	// MaxElapsed bounds the time spent retrying one write. Default 5s.
	MaxElapsed time.Duration `mapstructure:"max_elapsed"`
}

// Batch configures group commit of add_entries.
type Batch struct {
	// Disabled turns group commit off.
	Disabled bool `mapstructure:"disabled"`
	// MaxRequests caps the requests in one batch. Default 64.
	MaxRequests int `mapstructure:"max_requests"`
	// MaxBytes caps the entry bytes in one batch. Default 4 MiB.
	MaxBytes int64 `mapstructure:"max_bytes"`
	// GatherDelay is how long after a batch ended the next batch waits
	// for writes before it goes to Fava, so that writers answered together
	// are batched together. Zero turns it off. Default 5ms.
	GatherDelay time.Duration `mapstructure:"gather_delay"`
}

// Durability configures crash-safe writes: a pre-image of every file a
// write may change is kept until the write is verified and fsynced.
type Durability struct {
	// Disabled turns pre-images and fsync off: a write interrupted by a
	// crash can then leave a torn ledger, and an acknowledged entry can be
	// lost to a power cut. For measurements only.
	Disabled bool `mapstructure:"disabled"`
	// Quiet is how long the files of a write whose outcome is unknown (Fava
	// did not answer, or the process that sent it died) must stay unchanged
	// before favaproxy decides it: keeps it when it is complete, else
	// restores the files. Default 1s.
	Quiet time.Duration `mapstructure:"quiet"`
}

// Idempotency configures Idempotency-Key handling.
type Idempotency struct {
	// Header is the request header carrying the key. Default Idempotency-Key.
	Header string `mapstructure:"header"`
	// Prefix is put before every key to form the Beancount link.
	Prefix string `mapstructure:"prefix"`
	// MetaKey is the metadata key that carries the key on Balance and Note
	// entries. Default idempotency-key.
	MetaKey string `mapstructure:"meta_key"`
}

// Merge configures three-way merges of whole-file edits.
type Merge struct {
	// CacheBytes bounds the remembered file versions. Default 64 MiB.
	CacheBytes int64 `mapstructure:"cache_bytes"`
}

// Auth configures optional authentication inside favaproxy.
type Auth struct {
	// Mode is "" (none: trust the identity header of trusted proxies),
	// "basic" (htpasswd file with bcrypt hashes) or "token" (bearer tokens).
	Mode string `mapstructure:"mode"`
	// HtpasswdFile is the htpasswd file for mode basic.
	HtpasswdFile string `mapstructure:"htpasswd_file"`
	// Tokens are the bearer tokens for mode token.
	Tokens []Token `mapstructure:"tokens"`
	// ReadOnlyUsers may read but get 403 on any write.
	ReadOnlyUsers []string `mapstructure:"read_only_users"`
}

// Token maps a bearer token, stored as its sha256 hex, to a user.
type Token struct {
	User   string `mapstructure:"user"`
	SHA256 string `mapstructure:"sha256"`
}

// Log configures logging.
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `mapstructure:"level"`
	// Format is text or json. Default text.
	Format string `mapstructure:"format"`
}

// The lock backends (Lock.Backend).
const (
	BackendFlock = "flock"
	BackendEtcd  = "etcd"
	BackendNone  = "none"
)

// Lock is how a ledger's lock spans processes and hosts.
type Lock struct {
	// Backend is flock (default: a lock file beside the ledger, for every
	// process on one host), etcd (several hosts, for example replicas on
	// shared storage) or none (this process only: unsafe when any other
	// process writes the ledger).
	Backend string `mapstructure:"backend"`
	// Etcd configures the etcd backend.
	Etcd LockEtcd `mapstructure:"etcd"`
}

// LockEtcd is the etcd cluster that holds the ledger locks.
type LockEtcd struct {
	// Endpoints are the cluster's client URLs. Default
	// http://127.0.0.1:2379.
	Endpoints []string `mapstructure:"endpoints"`
	// Prefix starts every lock key: <prefix>/<ledger lock_key>. Default
	// /favaproxy/locks.
	Prefix string `mapstructure:"prefix"`
	// TTL is the lease of a holder: a holder that stops renewing it (dead,
	// paused, cut off from etcd) loses the lock after at most TTL. Default
	// 10s; below lock_timeout, so that writers outwait a dead holder.
	TTL time.Duration `mapstructure:"ttl"`
	// DialTimeout bounds connecting to etcd. Default 5s.
	DialTimeout time.Duration `mapstructure:"dial_timeout"`
	// Username and Password authenticate to etcd (role-based access).
	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
	// CAFile, CertFile and KeyFile configure TLS: the CA that signs the
	// servers' certificates, and a client certificate and key. With
	// https endpoints and no CAFile, the system's roots are used.
	CAFile   string `mapstructure:"ca_file"`
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Disabled turns /metrics off.
	Disabled bool `mapstructure:"disabled"`
}

// Default returns the configuration with every default filled in and no
// ledgers.
func Default() Config {
	return Config{
		Listen:        "127.0.0.1:5001",
		Upstream:      "http://127.0.0.1:5000",
		LockTimeout:   30 * time.Second,
		ShutdownGrace: 30 * time.Second,
		Identity:      Identity{Header: "X-Remote-User"},
		Timeouts: Timeouts{
			ReadHeader: 10 * time.Second,
			Read:       60 * time.Second,
			Idle:       120 * time.Second,
			Dial:       5 * time.Second,
			Upstream:   120 * time.Second,
			Stall:      10 * time.Second,
		},
		Limits: Limits{
			JSONBody:    1 << 20,
			SourceBody:  32 << 20,
			UploadBody:  64 << 20,
			HeaderBytes: 64 << 10,
			QueueDepth:  256,
			BufferBytes: 96 << 20,
		},
		Retry:       Retry{MaxAttempts: 5, InitialInterval: 50 * time.Millisecond, MaxElapsed: 5 * time.Second},
		Batch:       Batch{MaxRequests: 64, MaxBytes: 4 << 20, GatherDelay: 5 * time.Millisecond},
		Idempotency: Idempotency{Header: "Idempotency-Key", Prefix: "idem-", MetaKey: "idempotency-key"},
		Merge:       Merge{CacheBytes: 64 << 20},
		Durability:  Durability{Quiet: time.Second},
		Lock: Lock{Backend: BackendFlock, Etcd: LockEtcd{
			Endpoints: []string{"http://127.0.0.1:2379"}, Prefix: "/favaproxy/locks",
			TTL: 10 * time.Second, DialTimeout: 5 * time.Second,
		}},
		Log: Log{Level: "info", Format: "text"},
	}
}

// ParseLedger parses a --ledger flag value: PATH or SLUG=PATH.
func ParseLedger(s string) Ledger {
	if slug, path, ok := strings.Cut(s, "="); ok && slug != "" && !strings.ContainsAny(slug, `/\`) {
		return Ledger{File: path, Slug: slug}
	}
	return Ledger{File: s}
}

// LockPath returns the ledger's lock file: LockFile, or
// <dir>/.<file name>.favaproxy.lock beside the ledger.
func (l Ledger) LockPath() string {
	if l.LockFile != "" {
		return l.LockFile
	}
	return DefaultLockFile(l.File)
}

// LockName returns the ledger's lock key on etcd: LockKey, or the ledger
// file's base name.
func (l Ledger) LockName() string {
	if l.LockKey != "" {
		return l.LockKey
	}
	return filepath.Base(filepath.Clean(l.File))
}

// FencePath returns the ledger's fence file: FenceFile, or
// <dir>/.<file name>.favaproxy.fence beside the ledger.
func (l Ledger) FencePath() string {
	if l.FenceFile != "" {
		return l.FenceFile
	}
	dir, name := filepath.Split(filepath.Clean(l.File))
	return filepath.Join(dir, "."+name+".favaproxy.fence")
}

// DefaultLockFile returns <dir>/.<file name>.favaproxy.lock for a ledger file.
func DefaultLockFile(ledgerFile string) string {
	dir, name := filepath.Split(filepath.Clean(ledgerFile))
	return filepath.Join(dir, "."+name+".favaproxy.lock")
}

// StatePath returns the ledger's state directory: StateDir, or
// <dir>/.favaproxy beside the ledger.
func (l Ledger) StatePath() string {
	if l.StateDir != "" {
		return l.StateDir
	}
	return filepath.Join(filepath.Dir(filepath.Clean(l.File)), ".favaproxy")
}

// UpstreamURL returns the parsed Upstream.
func (c *Config) UpstreamURL() (*url.URL, error) {
	u, err := url.Parse(c.Upstream)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("upstream: scheme must be http or https, got %q", u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("upstream: no host in %q", c.Upstream)
	}
	return u, nil
}

// TrustedPrefixes parses Identity.TrustedProxies: single addresses become
// one-address prefixes.
func (c *Config) TrustedPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, s := range c.Identity.TrustedProxies {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("identity.trusted_proxies: %q is neither an address nor a CIDR", s))
			continue
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, errors.Join(errs...)
}

// Validate reports every problem of c at once.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		add("listen: %v", err)
	}
	if _, err := c.UpstreamURL(); err != nil {
		errs = append(errs, err)
	}
	if len(c.Ledgers) == 0 {
		add("ledgers: at least one ledger is required")
	}
	slugs := map[string]bool{}
	for i, l := range c.Ledgers {
		switch fi, err := os.Stat(l.File); {
		case l.File == "":
			add("ledgers[%d].file: empty", i)
		case err != nil:
			add("ledgers[%d].file: %v", i, err)
		case fi.IsDir():
			add("ledgers[%d].file: %s is a directory", i, l.File)
		}
		if l.Slug != "" {
			if slugs[l.Slug] {
				add("ledgers[%d].slug: %q used twice", i, l.Slug)
			}
			slugs[l.Slug] = true
			if strings.ContainsAny(l.Slug, "/?#% ") {
				add("ledgers[%d].slug: %q is not a URL path segment", i, l.Slug)
			}
		}
		if l.File != "" && filepath.Clean(l.LockPath()) == filepath.Clean(l.File) {
			add("ledgers[%d].lock_file: must not be the ledger file itself", i)
		}
	}
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			add("%s: must be positive, got %s", name, d)
		}
	}
	positive("lock_timeout", c.LockTimeout)
	positive("shutdown_grace", c.ShutdownGrace)
	positive("timeouts.read_header", c.Timeouts.ReadHeader)
	positive("timeouts.read", c.Timeouts.Read)
	positive("timeouts.idle", c.Timeouts.Idle)
	positive("timeouts.dial", c.Timeouts.Dial)
	positive("timeouts.upstream", c.Timeouts.Upstream)
	positive("timeouts.stall", c.Timeouts.Stall)
	positive("retry.initial_interval", c.Retry.InitialInterval)
	positive("retry.max_elapsed", c.Retry.MaxElapsed)
	positive("durability.quiet", c.Durability.Quiet)
	if c.Retry.MaxElapsed >= c.LockTimeout && c.LockTimeout > 0 {
		add("retry.max_elapsed (%s) must stay below lock_timeout (%s)", c.Retry.MaxElapsed, c.LockTimeout)
	}
	if c.Batch.GatherDelay < 0 || c.Batch.GatherDelay > time.Second {
		add("batch.gather_delay: must be between 0 and 1s, got %s", c.Batch.GatherDelay)
	}
	if c.Retry.MaxAttempts < 1 {
		add("retry.max_attempts: must be at least 1, got %d", c.Retry.MaxAttempts)
	}
	positiveN := func(name string, n int64) {
		if n <= 0 {
			add("%s: must be positive, got %d", name, n)
		}
	}
	positiveN("limits.json_body", c.Limits.JSONBody)
	positiveN("limits.source_body", c.Limits.SourceBody)
	positiveN("limits.upload_body", c.Limits.UploadBody)
	positiveN("limits.header_bytes", int64(c.Limits.HeaderBytes))
	positiveN("limits.queue_depth", int64(c.Limits.QueueDepth))
	if c.Limits.BufferBytes < c.Limits.UploadBody || c.Limits.BufferBytes < c.Limits.SourceBody || c.Limits.BufferBytes < c.Limits.JSONBody {
		add("limits.buffer_bytes (%d) must be at least every body limit (upload_body %d, source_body %d, json_body %d)",
			c.Limits.BufferBytes, c.Limits.UploadBody, c.Limits.SourceBody, c.Limits.JSONBody)
	}
	positiveN("batch.max_requests", int64(c.Batch.MaxRequests))
	positiveN("batch.max_bytes", c.Batch.MaxBytes)
	positiveN("merge.cache_bytes", c.Merge.CacheBytes)
	if h := c.Identity.Header; h == "" || strings.ContainsAny(h, " :\t\r\n") {
		add("identity.header: %q is not a header name", h)
	}
	if _, err := c.TrustedPrefixes(); err != nil {
		errs = append(errs, err)
	}
	if h := c.Idempotency.Header; h == "" || strings.ContainsAny(h, " :\t\r\n") {
		add("idempotency.header: %q is not a header name", h)
	}
	for i := range len(c.Idempotency.Prefix) {
		if !favaproxy.IsLinkChar(c.Idempotency.Prefix[i]) {
			add("idempotency.prefix: %q may only hold A-Z a-z 0-9 - _ / .", c.Idempotency.Prefix)
			break
		}
	}
	if msg := fava.CheckMetaKey(c.Idempotency.MetaKey); msg != "" {
		add("idempotency.meta_key: %s", msg)
	}
	switch c.Lock.Backend {
	case BackendFlock, BackendNone:
	case BackendEtcd:
		if len(c.Lock.Etcd.Endpoints) == 0 {
			add("lock.etcd.endpoints: required for lock.backend etcd")
		}
		for _, e := range c.Lock.Etcd.Endpoints {
			if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add("lock.etcd.endpoints: %q is not an http(s) URL", e)
			}
		}
		if !strings.HasPrefix(c.Lock.Etcd.Prefix, "/") {
			add("lock.etcd.prefix: %q must start with /", c.Lock.Etcd.Prefix)
		}
		if c.Lock.Etcd.TTL < time.Second {
			add("lock.etcd.ttl: must be at least 1s, got %s", c.Lock.Etcd.TTL)
		} else if c.Lock.Etcd.TTL >= c.LockTimeout {
			add("lock.etcd.ttl (%s) must stay below lock_timeout (%s), so that writers outwait a dead holder", c.Lock.Etcd.TTL, c.LockTimeout)
		}
		positive("lock.etcd.dial_timeout", c.Lock.Etcd.DialTimeout)
		if (c.Lock.Etcd.CertFile == "") != (c.Lock.Etcd.KeyFile == "") {
			add("lock.etcd.cert_file and lock.etcd.key_file: give both or neither")
		}
		keys := map[string]int{}
		for i, l := range c.Ledgers {
			if j, dup := keys[l.LockName()]; dup {
				add("ledgers[%d] and ledgers[%d] have the same lock key %q: set lock_key", j, i, l.LockName())
			}
			keys[l.LockName()] = i
		}
	default:
		add("lock.backend: %q is not flock, etcd or none", c.Lock.Backend)
	}
	switch c.Auth.Mode {
	case "":
	case "basic":
		if c.Auth.HtpasswdFile == "" {
			add("auth.htpasswd_file: required for auth.mode basic")
		} else if _, err := os.Stat(c.Auth.HtpasswdFile); err != nil {
			add("auth.htpasswd_file: %v", err)
		}
	case "token":
		if len(c.Auth.Tokens) == 0 {
			add("auth.tokens: required for auth.mode token")
		}
		for i, t := range c.Auth.Tokens {
			if t.User == "" {
				add("auth.tokens[%d].user: empty", i)
			}
			if len(t.SHA256) != 64 || strings.Trim(strings.ToLower(t.SHA256), "0123456789abcdef") != "" {
				add("auth.tokens[%d].sha256: want 64 hex digits", i)
			}
		}
	default:
		add("auth.mode: %q is not one of \"\", basic, token", c.Auth.Mode)
	}
	if len(c.Auth.ReadOnlyUsers) > 0 && c.Auth.Mode == "" && len(c.Identity.TrustedProxies) == 0 {
		// The user would be the Basic user name a client chooses: any
		// client could write by naming another user.
		add("auth.read_only_users: needs auth.mode or identity.trusted_proxies; without either, the user is whatever Basic user name a client sends")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level: %q is not one of debug, info, warn, error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format: %q is not one of text, json", c.Log.Format)
	}
	return errors.Join(errs...)
}
