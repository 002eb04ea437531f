// Package deploy_test checks that the deployment files in this directory
// agree with favaproxy: the routes it serves, the subcommands it has and the
// configuration keys it accepts.
package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/favaproxy/favaproxy/proxy"
)

// Health routes served at the root by favaproxy, as the server registers
// them.
const (
	livezPath   = proxy.PathLivez
	readyzPath  = proxy.PathReadyz
	healthzPath = proxy.PathHealthz
)

// The health subcommand as an exec-form Docker health check.
var healthCmd = []string{"/favaproxy", "health"}

// readYAML decodes every document of a YAML file.
func readYAML(tb testing.TB, name string) []map[string]any {
	tb.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		tb.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			tb.Fatalf("%s: document %d: %v", name, len(docs)+1, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// dig walks maps by key and lists by index (an int) and returns the value,
// or nil when any step is missing.
func dig(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func list(v any) []any         { l, _ := v.([]any); return l }
func str(v any) string         { s, _ := v.(string); return s }
func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }

// strs turns a YAML list of scalars into strings.
func strs(v any) []string {
	var out []string
	for _, e := range list(v) {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

// listenPort returns the port of a listen address.
func listenPort(tb testing.TB, addr string) string {
	tb.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatalf("listen address %q: %v", addr, err)
	}
	return port
}

func TestEveryYAMLFileParses(t *testing.T) {
	files, err := filepath.Glob("*.y*ml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		if docs := readYAML(t, f); len(docs) == 0 {
			t.Errorf("%s: no YAML documents", f)
		}
	}
}

func TestCompose(t *testing.T) {
	doc := readYAML(t, "docker-compose.yml")[0]
	services := obj(doc["services"])
	fava, proxy := obj(services["fava"]), obj(services["favaproxy"])
	if fava == nil || proxy == nil {
		t.Fatalf("want services fava and favaproxy, have %v", slices.Sorted(maps.Keys(services)))
	}

	// The config file favaproxy is started with.
	if got, want := strs(proxy["command"]), []string{"serve", "--config", "/etc/favaproxy/config.yaml"}; !slices.Equal(got, want) {
		t.Errorf("favaproxy command=%q, want %q", got, want)
	}
	mounts := volumeMounts(t, proxy)
	src, ok := mounts["/etc/favaproxy/config.yaml"]
	if !ok {
		t.Fatalf("favaproxy mounts nothing at /etc/favaproxy/config.yaml: %v", mounts)
	}
	cfg := decodeConfigFile(t, src.source)
	port := listenPort(t, cfg.Listen)

	t.Run("OnlyFavaproxyPublished", func(t *testing.T) {
		for name, svc := range services {
			ports := list(obj(svc)["ports"])
			if name != "favaproxy" && len(ports) > 0 {
				t.Errorf("service %s publishes %v: only favaproxy may", name, ports)
			}
		}
		ports := strs(proxy["ports"])
		if len(ports) != 1 {
			t.Fatalf("favaproxy ports=%q, want one", ports)
		}
		parts := strings.Split(ports[0], ":")
		if got := parts[len(parts)-1]; got != port {
			t.Errorf("favaproxy publishes container port %s, want its listen port %s", got, port)
		}
	})
	t.Run("FavaOnInternalNetworkOnly", func(t *testing.T) {
		nets := strs(fava["networks"])
		if len(nets) == 0 {
			t.Fatal("fava is on the default network, which other containers share")
		}
		for _, n := range nets {
			if dig(doc, "networks", n, "internal") != true {
				t.Errorf("fava's network %s is not internal", n)
			}
			if !slices.Contains(strs(proxy["networks"]), n) {
				t.Errorf("favaproxy is not on fava's network %s", n)
			}
		}
	})
	t.Run("HealthCheck", func(t *testing.T) {
		test := strs(dig(proxy, "healthcheck", "test"))
		if got, want := test, append([]string{"CMD"}, healthCmd...); !slices.Equal(got, want) {
			t.Errorf("favaproxy healthcheck test=%q, want %q", got, want)
		}
	})
	t.Run("Upstream", func(t *testing.T) {
		env := obj(proxy["environment"])
		if got, want := str(env["FAVAPROXY_UPSTREAM"]), "http://fava:5000"; got != want {
			t.Errorf("FAVAPROXY_UPSTREAM=%q, want %q", got, want)
		}
		if got, want := cfg.Upstream, str(env["FAVAPROXY_UPSTREAM"]); got != want {
			t.Errorf("config upstream=%q, environment says %q", got, want)
		}
		if !slices.Contains(strs(proxy["depends_on"]), "fava") && dig(proxy, "depends_on", "fava") == nil {
			t.Error("favaproxy does not depend on fava")
		}
	})
	t.Run("SharedWritableLedger", func(t *testing.T) {
		favaMounts := volumeMounts(t, fava)
		for _, l := range cfg.Ledgers {
			dir := filepath.Dir(l.File)
			pm, ok := mounts[dir]
			if !ok {
				t.Fatalf("favaproxy does not mount the ledger directory %s", dir)
			}
			fm, ok := favaMounts[dir]
			if !ok {
				t.Fatalf("fava does not mount the ledger directory %s", dir)
			}
			if pm.source != fm.source {
				t.Errorf("ledger directory %s: favaproxy mounts %s, fava mounts %s", dir, pm.source, fm.source)
			}
			if pm.readOnly || fm.readOnly {
				t.Errorf("ledger directory %s mounted read-only; both must write", dir)
			}
		}
	})
	t.Run("Build", func(t *testing.T) {
		if got, want := str(dig(proxy, "build", "dockerfile")), "deploy/Dockerfile"; got != want {
			t.Errorf("build.dockerfile=%q, want %q", got, want)
		}
		ctx := str(dig(proxy, "build", "context"))
		if _, err := os.Stat(filepath.Join(ctx, "go.mod")); err != nil {
			t.Errorf("build.context %q is not the module root: %v", ctx, err)
		}
	})
}

type mount struct {
	source   string
	readOnly bool
}

// volumeMounts returns a compose service's short-syntax volumes by target.
func volumeMounts(tb testing.TB, svc map[string]any) map[string]mount {
	tb.Helper()
	out := map[string]mount{}
	for _, v := range strs(svc["volumes"]) {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			tb.Fatalf("volume %q: want SOURCE:TARGET[:MODE]", v)
		}
		// ${VAR:-default} holds a colon of its own.
		if strings.HasPrefix(v, "${") {
			end := strings.Index(v, "}")
			parts = append([]string{v[:end+1]}, strings.Split(v[end+2:], ":")...)
		}
		m := mount{source: parts[0]}
		if len(parts) > 2 {
			m.readOnly = slices.Contains(strings.Split(parts[2], ","), "ro")
		}
		out[parts[1]] = m
	}
	return out
}

func TestKubernetes(t *testing.T) {
	byKind := map[string][]map[string]any{}
	for _, d := range readYAML(t, "kubernetes.yaml") {
		byKind[str(d["kind"])] = append(byKind[str(d["kind"])], d)
	}
	for _, k := range []string{"ConfigMap", "Deployment", "Service", "PersistentVolumeClaim"} {
		if len(byKind[k]) != 1 {
			t.Fatalf("want one %s, have %d", k, len(byKind[k]))
		}
	}
	dep, svc, cm := byKind["Deployment"][0], byKind["Service"][0], byKind["ConfigMap"][0]
	pod := obj(dig(dep, "spec", "template", "spec"))

	var sidecar map[string]any
	for _, c := range list(pod["initContainers"]) {
		if str(obj(c)["name"]) == "favaproxy" {
			sidecar = obj(c)
		}
	}
	if sidecar == nil {
		t.Fatal("no initContainer named favaproxy")
	}
	ports := list(sidecar["ports"])
	if len(ports) != 1 {
		t.Fatalf("favaproxy declares ports %v, want one", ports)
	}
	portName, portNum := str(dig(ports[0], "name")), fmt.Sprint(dig(ports[0], "containerPort"))
	isProxyPort := func(v any) bool { s := fmt.Sprint(v); return s == portName || s == portNum }

	cfg := decodeConfig(t, "ConfigMap favaproxy", []byte(str(dig(cm, "data", "config.yaml"))))
	if got, want := listenPort(t, cfg.Listen), portNum; got != want {
		t.Errorf("config listens on port %s, container port is %s", got, want)
	}

	t.Run("NativeSidecar", func(t *testing.T) {
		if got, want := str(sidecar["restartPolicy"]), "Always"; got != want {
			t.Errorf("favaproxy restartPolicy=%q, want %q", got, want)
		}
		if got, want := fmt.Sprint(dig(dep, "spec", "replicas")), "1"; got != want {
			t.Errorf("replicas=%s, want %s", got, want)
		}
	})
	t.Run("Probes", func(t *testing.T) {
		for probe, path := range map[string]string{"livenessProbe": livezPath, "readinessProbe": readyzPath} {
			get := dig(sidecar, probe, "httpGet")
			if got := str(dig(get, "path")); got != path {
				t.Errorf("%s path=%q, want %q", probe, got, path)
			}
			if p := dig(get, "port"); !isProxyPort(p) {
				t.Errorf("%s port=%v, want favaproxy's port %s/%s", probe, p, portName, portNum)
			}
		}
		routes := []string{livezPath, readyzPath, healthzPath}
		for _, c := range append(list(pod["initContainers"]), list(pod["containers"])...) {
			for _, probe := range []string{"startupProbe", "livenessProbe", "readinessProbe"} {
				if p := dig(c, probe, "httpGet", "path"); p != nil && !slices.Contains(routes, str(p)) {
					t.Errorf("container %s: %s path %v is not one of favaproxy's routes %v", str(obj(c)["name"]), probe, p, routes)
				}
			}
		}
		if p := str(dig(sidecar, "startupProbe", "httpGet", "path")); p != "" && p != livezPath {
			// Fava starts only after favaproxy's startup probe passes, so it
			// must not wait for Fava.
			t.Errorf("startupProbe path=%q, want %q or none", p, livezPath)
		}
	})
	t.Run("ServiceTargetsFavaproxyOnly", func(t *testing.T) {
		sp := list(dig(svc, "spec", "ports"))
		if len(sp) == 0 {
			t.Fatal("Service has no ports")
		}
		for _, p := range sp {
			if tp := dig(p, "targetPort"); !isProxyPort(tp) {
				t.Errorf("Service targets port %v, want only favaproxy's %s/%s", tp, portName, portNum)
			}
		}
		labels := obj(dig(dep, "spec", "template", "metadata", "labels"))
		for k, v := range obj(dig(svc, "spec", "selector")) {
			if labels[k] != v {
				t.Errorf("Service selector %s=%v does not match the pod's labels %v", k, v, labels)
			}
		}
	})
	t.Run("FavaUnexposed", func(t *testing.T) {
		for _, c := range list(pod["containers"]) {
			if p := list(obj(c)["ports"]); len(p) > 0 {
				t.Errorf("container %s declares ports %v", str(obj(c)["name"]), p)
			}
			for _, e := range list(obj(c)["env"]) {
				if str(dig(e, "name")) == "FAVA_HOST" && str(dig(e, "value")) != "127.0.0.1" {
					t.Errorf("Fava listens on %v, want 127.0.0.1", dig(e, "value"))
				}
			}
		}
		if got, want := cfg.Upstream, "http://127.0.0.1:5000"; got != want {
			t.Errorf("config upstream=%q, want %q", got, want)
		}
	})
	t.Run("SecurityContext", func(t *testing.T) {
		if dig(pod, "securityContext", "runAsNonRoot") != true {
			t.Error("pod securityContext.runAsNonRoot is not true")
		}
		for _, c := range append(list(pod["initContainers"]), list(pod["containers"])...) {
			name := str(obj(c)["name"])
			if dig(c, "securityContext", "readOnlyRootFilesystem") != true {
				t.Errorf("container %s: readOnlyRootFilesystem is not true", name)
			}
			if dig(c, "securityContext", "allowPrivilegeEscalation") != false {
				t.Errorf("container %s: allowPrivilegeEscalation is not false", name)
			}
		}
	})
	t.Run("SharedLedgerVolume", func(t *testing.T) {
		for _, c := range append(list(pod["initContainers"]), list(pod["containers"])...) {
			for _, l := range cfg.Ledgers {
				found := false
				for _, m := range list(obj(c)["volumeMounts"]) {
					mp := str(dig(m, "mountPath"))
					if strings.HasPrefix(l.File, strings.TrimSuffix(mp, "/")+"/") && dig(m, "readOnly") != true {
						found = true
					}
				}
				if !found {
					t.Errorf("container %s does not mount %s writable", str(obj(c)["name"]), l.File)
				}
			}
		}
		grace, _ := strconv.Atoi(fmt.Sprint(pod["terminationGracePeriodSeconds"]))
		if grace <= int(cfg.ShutdownGrace.Seconds()) {
			t.Errorf("terminationGracePeriodSeconds=%d, want more than shutdown_grace %s", grace, cfg.ShutdownGrace)
		}
	})
}

// dockerfile returns the Dockerfile's instructions, continuation lines
// joined, comments dropped.
func dockerfile(tb testing.TB) []string {
	tb.Helper()
	f, err := os.Open("Dockerfile")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var out []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || (line == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		out = append(out, cur.String())
		cur.Reset()
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	return out
}

func TestDockerfile(t *testing.T) {
	lines := dockerfile(t)
	// Instructions of the final stage.
	last := 0
	for i, l := range lines {
		if strings.HasPrefix(l, "FROM ") {
			last = i
		}
	}
	final := lines[last:]
	var healthchecks, users, entrypoints, exposes, envs []string
	for _, l := range final {
		verb, rest, _ := strings.Cut(l, " ")
		switch verb {
		case "HEALTHCHECK":
			healthchecks = append(healthchecks, l)
		case "USER":
			users = append(users, rest)
		case "ENTRYPOINT":
			entrypoints = append(entrypoints, rest)
		case "EXPOSE":
			exposes = append(exposes, rest)
		case "ENV":
			envs = append(envs, rest)
		}
	}
	if got, want := healthchecks, []string{`HEALTHCHECK CMD ["/favaproxy","health"]`}; !slices.Equal(got, want) {
		t.Errorf("HEALTHCHECK lines=%q, want %q", got, want)
	}
	if len(users) == 0 {
		t.Error("final stage has no USER: it would run as root")
	}
	for _, u := range users {
		name, _, _ := strings.Cut(u, ":")
		if name == "root" || name == "0" {
			t.Errorf("USER %s is root", u)
		}
	}
	if got, want := entrypoints, []string{`["/favaproxy"]`}; !slices.Equal(got, want) {
		t.Errorf("ENTRYPOINT=%q, want %q", got, want)
	}
	if !strings.HasPrefix(final[0], "FROM gcr.io/distroless/static-debian12:nonroot") {
		t.Errorf("final stage %q, want the distroless static nonroot image", final[0])
	}
	var listen string
	for _, e := range envs {
		if v, ok := strings.CutPrefix(e, "FAVAPROXY_LISTEN="); ok {
			listen = v
		}
	}
	if got, want := exposes, []string{listenPort(t, listen)}; !slices.Equal(got, want) {
		t.Errorf("EXPOSE %q, want the FAVAPROXY_LISTEN port %q", got, want)
	}
	all := strings.Join(lines, "\n")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/favaproxy", "COPY --from=build /out/favaproxy /favaproxy"} {
		if !strings.Contains(all, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
