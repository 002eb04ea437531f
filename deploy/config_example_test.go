package deploy_test

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/go-viper/mapstructure/v2"
	"go.yaml.in/yaml/v3"

	"github.com/favaproxy/favaproxy/config"
)

// decodeConfig decodes YAML onto config.Default() the way viper's
// UnmarshalExact does: durations from strings, and a key that names no field
// is an error.
func decodeConfig(tb testing.TB, name string, b []byte) config.Config {
	tb.Helper()
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	cfg := config.Default()
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		),
		WeaklyTypedInput: true,
		ErrorUnused:      true,
		Result:           &cfg,
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := dec.Decode(raw); err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return cfg
}

func decodeConfigFile(tb testing.TB, name string) config.Config {
	tb.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		tb.Fatal(err)
	}
	return decodeConfig(tb, name, b)
}

// validate runs Validate with every ledger file (which lives where the
// deployment puts it) replaced by a real temporary one.
func validate(tb testing.TB, cfg config.Config) error {
	tb.Helper()
	dir := tb.TempDir()
	cfg.Ledgers = slices.Clone(cfg.Ledgers)
	for i := range cfg.Ledgers {
		f := filepath.Join(dir, strings.ReplaceAll(filepath.Base(cfg.Ledgers[i].File), "/", "_"))
		if err := os.WriteFile(f, []byte("option \"title\" \"t\"\n"), 0o600); err != nil {
			tb.Fatal(err)
		}
		cfg.Ledgers[i] = config.Ledger{File: f, Slug: cfg.Ledgers[i].Slug}
	}
	return cfg.Validate()
}

// tagPaths lists every key path of t's mapstructure tags; elements of a list
// of sections appear as "key[].field".
func tagPaths(t reflect.Type, prefix string) []string {
	var out []string
	for f := range t.Fields() {
		tag, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		path := prefix + tag
		ft := f.Type
		switch {
		case ft.Kind() == reflect.Struct:
			out = append(out, tagPaths(ft, path+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, tagPaths(ft.Elem(), path+"[].")...)
		default:
			out = append(out, path)
		}
	}
	return out
}

// yamlPaths lists every key path of decoded YAML, in the form of tagPaths.
func yamlPaths(v any, path string) []string {
	switch v := v.(type) {
	case map[string]any:
		var out []string
		for k, e := range v {
			p := k
			if path != "" && !strings.HasSuffix(path, ".") {
				p = path + "." + k
			} else {
				p = path + k
			}
			out = append(out, yamlPaths(e, p)...)
		}
		return out
	case []any:
		var out []string
		for _, e := range v {
			if m, ok := e.(map[string]any); ok {
				out = append(out, yamlPaths(m, path+"[].")...)
			}
		}
		if out == nil {
			return []string{path}
		}
		return out
	default:
		return []string{path}
	}
}

func TestExampleConfigIsComplete(t *testing.T) {
	b, err := os.ReadFile("config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	want := tagPaths(reflect.TypeFor[config.Config](), "")
	have := yamlPaths(raw, "")
	for _, p := range have {
		if !slices.Contains(want, p) {
			t.Errorf("config.example.yaml has %s, which config.Config does not know", p)
		}
	}
	for _, p := range want {
		if !slices.Contains(have, p) {
			t.Errorf("config.example.yaml lacks %s", p)
		}
	}
}

func TestExampleConfigShowsDefaults(t *testing.T) {
	cfg := decodeConfigFile(t, "config.example.yaml")
	if err := validate(t, cfg); err != nil {
		t.Fatalf("example config does not validate:\n%v", err)
	}
	// Lists have no default; the example shows one entry of each.
	if len(cfg.Ledgers) == 0 || len(cfg.Auth.Tokens) == 0 {
		t.Fatal("example config shows no ledger or no token entry")
	}
	for _, l := range cfg.Ledgers {
		if got, want := l, (config.Ledger{File: l.File}); got != want {
			t.Errorf("example ledger %+v: optional fields are not their defaults (empty)", got)
		}
	}
	cfg.Ledgers, cfg.Auth.Tokens = nil, nil
	if cfg.Identity.TrustedProxies != nil && len(cfg.Identity.TrustedProxies) == 0 {
		cfg.Identity.TrustedProxies = nil
	}
	if cfg.Auth.ReadOnlyUsers != nil && len(cfg.Auth.ReadOnlyUsers) == 0 {
		cfg.Auth.ReadOnlyUsers = nil
	}
	if got, want := cfg, config.Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("example values differ from the defaults:\n got %+v\nwant %+v", got, want)
	}
}

func TestDeployedConfigsValidate(t *testing.T) {
	for _, name := range []string{"compose.config.yaml", "hosts.config.yaml"} {
		if err := validate(t, decodeConfigFile(t, name)); err != nil {
			t.Errorf("%s:\n%v", name, err)
		}
	}
	for _, d := range readYAML(t, "kubernetes.yaml") {
		if str(d["kind"]) != "ConfigMap" {
			continue
		}
		for key, text := range obj(d["data"]) {
			name := "kubernetes.yaml ConfigMap " + key
			if err := validate(t, decodeConfig(t, name, []byte(str(text)))); err != nil {
				t.Errorf("%s:\n%v", name, err)
			}
		}
	}
}
