package main

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/favaproxy/favaproxy/config"
)

// envPrefix starts every environment variable favaproxy reads.
const envPrefix = "FAVAPROXY_"

// envConfigFile names the config file when --config is not given.
const envConfigFile = envPrefix + "CONFIG"

// configKeys returns every key of config.Config, nested ones dotted
// ("identity.header"), in field order. Structs are walked; time.Duration,
// slices and scalars are leaves.
func configKeys() []string {
	var keys []string
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for f := range t.Fields() {
			tag, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			key := prefix + tag
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Duration]() {
				walk(f.Type, key+".")
				continue
			}
			keys = append(keys, key)
		}
	}
	walk(reflect.TypeFor[config.Config](), "")
	return keys
}

// envName returns the environment variable of a key:
// identity.trusted_proxies → FAVAPROXY_IDENTITY_TRUSTED_PROXIES.
func envName(key string) string {
	return envPrefix + strings.ToUpper(envKeyReplacer.Replace(key))
}

var envKeyReplacer = strings.NewReplacer(".", "_", "-", "_")

// configFlag ties a command-line flag to the config key it sets.
type configFlag struct {
	key  string
	name string
}

// configFlagKeys are the flags of the keys people change often. addConfigFlags
// registers them on serve and run; loadConfig binds those set on the command
// line. --ledger is handled apart.
var configFlagKeys = []configFlag{
	{"listen", "listen"},
	{"upstream", "upstream"},
	{"lock_timeout", "lock-timeout"},
	{"identity.trusted_proxies", "trusted-proxy"},
	{"identity.header", "identity-header"},
	{"read_only", "read-only"},
	{"log.level", "log-level"},
	{"log.format", "log-format"},
	{"batch.disabled", "no-batch"},
}

// addConfigFlags registers the config flags on fs, with config.Default()'s
// values as the shown defaults. --ledger is separate: it replaces the whole
// ledger list (see loadConfig).
func addConfigFlags(fs *pflag.FlagSet) {
	d := config.Default()
	fs.String("listen", d.Listen, "address to serve on (HOST:PORT)")
	fs.String("upstream", d.Upstream, "Fava's base URL, optionally with its --prefix path")
	fs.StringArray("ledger", nil, "ledger file as PATH or SLUG=PATH; repeat for several (replaces the configured ledgers)")
	fs.Duration("lock-timeout", d.LockTimeout, "longest wait for a ledger lock before answering 503")
	fs.StringSlice("trusted-proxy", nil, "address or CIDR of a proxy whose identity header is trusted; repeatable")
	fs.String("identity-header", d.Identity.Header, "header carrying the user name set by a trusted proxy")
	fs.Bool("read-only", false, "refuse every write with 403")
	fs.String("log-level", d.Log.Level, "log level: debug, info, warn, error")
	fs.String("log-format", d.Log.Format, "log format: text, json")
	fs.Bool("no-batch", false, "turn off group commit of add_entries")
}

// loadConfig builds the configuration from, in rising precedence,
// config.Default(), the YAML file (configFile, else $FAVAPROXY_CONFIG),
// FAVAPROXY_* environment variables and the flags of fs that were set.
// Unknown keys in the file and unknown FAVAPROXY_* variables are errors.
// It does not validate.
func loadConfig(fs *pflag.FlagSet, configFile string) (config.Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	v.SetEnvKeyReplacer(envKeyReplacer)
	v.SetEnvPrefix(strings.TrimSuffix(envPrefix, "_"))

	keys := configKeys()
	defaults, err := defaultSettings()
	if err != nil {
		return config.Config{}, err
	}
	known := map[string]bool{envConfigFile: true}
	for _, k := range keys {
		if val, ok := defaults[k]; ok {
			v.SetDefault(k, val)
		}
		// viper ignores environment variables of keys it does not know,
		// so every key is bound, each to its own name.
		if err := v.BindEnv(k, envName(k)); err != nil {
			return config.Config{}, err
		}
		known[envName(k)] = true
	}
	var unknown []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, envPrefix) && !known[name] {
			unknown = append(unknown, name)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return config.Config{}, fmt.Errorf("unknown environment variable %s", strings.Join(unknown, ", "))
	}

	if fs != nil {
		for _, f := range configFlagKeys {
			// Only flags given on the command line: an unset flag's
			// default must not reach the config (it would beat nothing,
			// but turns a nil list into an empty one).
			if fl := fs.Lookup(f.name); fl != nil && fl.Changed {
				if err := v.BindPFlag(f.key, fl); err != nil {
					return config.Config{}, err
				}
			}
		}
	}

	if configFile == "" {
		configFile = os.Getenv(envConfigFile)
	}
	if configFile != "" {
		v.SetConfigFile(configFile)
		if err := v.ReadInConfig(); err != nil {
			return config.Config{}, fmt.Errorf("read config file %s: %w", configFile, err)
		}
	}

	var cfg config.Config
	hook := mapstructure.ComposeDecodeHookFunc(
		ledgerListHook, ledgerHook, tokenListHook, tokenHook,
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)
	if err := v.UnmarshalExact(&cfg, viper.DecodeHook(hook)); err != nil {
		where := "configuration"
		if configFile != "" {
			where = configFile
		}
		return config.Config{}, fmt.Errorf("%s: %s", where, decodeProblems(err))
	}

	// --ledger replaces the list; its values are taken as given (viper
	// would re-split them as CSV, breaking paths with commas or quotes).
	if fs != nil {
		if fl := fs.Lookup("ledger"); fl != nil && fl.Changed {
			vals, err := fs.GetStringArray("ledger")
			if err != nil {
				return config.Config{}, err
			}
			cfg.Ledgers = nil
			for _, s := range vals {
				cfg.Ledgers = append(cfg.Ledgers, config.ParseLedger(s))
			}
		}
	}
	return cfg, nil
}

var invalidKeysRe = regexp.MustCompile(`^'([^']*)' has invalid keys: (.+)$`)

// decodeProblems rewrites mapstructure's multi-line report as one line:
// "unknown key identity.hedaer; unknown key lisen; …".
func decodeProblems(err error) string {
	var out []string
	for line := range strings.Lines(err.Error()) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "decoding failed due to") {
			continue
		}
		m := invalidKeysRe.FindStringSubmatch(line)
		if m == nil {
			out = append(out, line)
			continue
		}
		for key := range strings.SplitSeq(m[2], ", ") {
			if m[1] != "" {
				key = m[1] + "." + key
			}
			out = append(out, "unknown key "+key)
		}
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// defaultSettings flattens config.Default() into dotted keys.
func defaultSettings() (map[string]any, error) {
	var m map[string]any
	if err := mapstructure.Decode(config.Default(), &m); err != nil {
		return nil, fmt.Errorf("flatten defaults: %w", err)
	}
	out := map[string]any{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, val := range m {
			if sub, ok := val.(map[string]any); ok {
				walk(prefix+k+".", sub)
				continue
			}
			if reflect.ValueOf(val).Kind() == reflect.Slice && reflect.ValueOf(val).IsNil() {
				continue
			}
			out[prefix+k] = val
		}
	}
	walk("", m)
	return out, nil
}

// ledgerListHook decodes a string, as FAVAPROXY_LEDGERS gives, into ledgers:
// comma-separated PATH or SLUG=PATH items.
func ledgerListHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeFor[[]config.Ledger]() {
		return data, nil
	}
	var out []config.Ledger
	for item := range strings.SplitSeq(data.(string), ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, config.ParseLedger(item))
		}
	}
	return out, nil
}

// ledgerHook lets a ledger in the YAML file be a plain string, as on the
// command line.
func ledgerHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeFor[config.Ledger]() {
		return data, nil
	}
	return config.ParseLedger(data.(string)), nil
}

// tokenListHook decodes a string, as FAVAPROXY_AUTH_TOKENS gives, into
// tokens: comma-separated USER:SHA256 items.
func tokenListHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeFor[[]config.Token]() {
		return data, nil
	}
	var out []config.Token
	for item := range strings.SplitSeq(data.(string), ",") {
		if item = strings.TrimSpace(item); item != "" {
			t, err := parseToken(item)
			if err != nil {
				return nil, err
			}
			out = append(out, t)
		}
	}
	return out, nil
}

// tokenHook lets a token in the YAML file be a plain USER:SHA256 string.
func tokenHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeFor[config.Token]() {
		return data, nil
	}
	return parseToken(data.(string))
}

func parseToken(s string) (config.Token, error) {
	user, sum, ok := strings.Cut(s, ":")
	if !ok {
		return config.Token{}, errors.New("auth.tokens: want USER:SHA256 items")
	}
	return config.Token{User: user, SHA256: sum}, nil
}
