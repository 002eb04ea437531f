package deploy_test

import (
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/favaproxy/favaproxy/config"
)

// etcdHosts returns the host names of a configuration's etcd endpoints.
func etcdHosts(tb testing.TB, cfg config.Config) []string {
	tb.Helper()
	var out []string
	for _, e := range cfg.Lock.Etcd.Endpoints {
		u, err := url.Parse(e)
		if err != nil {
			tb.Fatalf("endpoint %q: %v", e, err)
		}
		out = append(out, u.Hostname())
	}
	return out
}

// TestComposeHosts: every favaproxy of the several-hosts compose file
// takes the ledger lock on the etcd service, in front of a Fava of its
// own, on the same ledger directory.
func TestComposeHosts(t *testing.T) {
	doc := readYAML(t, "docker-compose.hosts.yml")[0]
	services := obj(doc["services"])
	if obj(services["etcd"]) == nil {
		t.Fatal("no etcd service")
	}
	var proxies []string
	for name := range services {
		if strings.HasPrefix(name, "favaproxy") {
			proxies = append(proxies, name)
		}
	}
	if len(proxies) < 2 {
		t.Fatalf("favaproxy services %v: want at least two", proxies)
	}
	upstreams := map[string]bool{}
	var ledgerSource string
	for _, name := range proxies {
		svc := obj(services[name])
		mounts := volumeMounts(t, svc)
		src, ok := mounts["/etc/favaproxy/config.yaml"]
		if !ok {
			t.Fatalf("%s mounts no config", name)
		}
		cfg := decodeConfigFile(t, src.source)
		if cfg.Lock.Backend != config.BackendEtcd {
			t.Errorf("%s: lock.backend %q, want etcd", name, cfg.Lock.Backend)
		}
		if hosts := etcdHosts(t, cfg); !slices.Equal(hosts, []string{"etcd"}) {
			t.Errorf("%s: etcd endpoints on %v, want the etcd service", name, hosts)
		}
		up := str(obj(svc["environment"])["FAVAPROXY_UPSTREAM"])
		u, err := url.Parse(up)
		if err != nil || obj(services[u.Hostname()]) == nil {
			t.Errorf("%s: upstream %q is not a service", name, up)
		} else if upstreams[u.Hostname()] {
			t.Errorf("%s: upstream %s is shared with another favaproxy", name, u.Hostname())
		}
		upstreams[u.Hostname()] = true
		if len(strs(svc["ports"])) != 1 {
			t.Errorf("%s publishes %v, want one port", name, strs(svc["ports"]))
		}
		for _, l := range cfg.Ledgers {
			m, ok := mounts[strings.TrimSuffix(l.File, "/main.beancount")]
			if !ok || m.readOnly {
				t.Fatalf("%s: ledger directory of %s not mounted writable", name, l.File)
			}
			if ledgerSource == "" {
				ledgerSource = m.source
			} else if m.source != ledgerSource {
				t.Errorf("%s mounts the ledger from %s, another favaproxy from %s", name, m.source, ledgerSource)
			}
		}
	}
}

// TestKubernetesHosts: the several-hosts manifest runs more than one
// replica on a ReadWriteMany volume, with the lock on the etcd Service.
func TestKubernetesHosts(t *testing.T) {
	byKind := map[string][]map[string]any{}
	for _, d := range readYAML(t, "kubernetes-hosts.yaml") {
		byKind[str(d["kind"])] = append(byKind[str(d["kind"])], d)
	}
	var dep map[string]any
	for _, d := range byKind["Deployment"] {
		dep = d
	}
	if dep == nil {
		t.Fatal("no Deployment")
	}
	if n, _ := dig(dep, "spec", "replicas").(int); n < 2 {
		t.Errorf("replicas %v, want at least 2", dig(dep, "spec", "replicas"))
	}
	var services []string
	for _, s := range byKind["Service"] {
		services = append(services, str(dig(s, "metadata", "name")))
	}
	pod := obj(dig(dep, "spec", "template", "spec"))
	claims, cmName := 0, ""
	for _, v := range list(pod["volumes"]) {
		if n := str(dig(v, "configMap", "name")); n != "" {
			cmName = n
		}
		claim := str(dig(v, "persistentVolumeClaim", "claimName"))
		for _, pvc := range byKind["PersistentVolumeClaim"] {
			if claim != "" && str(dig(pvc, "metadata", "name")) == claim {
				claims++
				if !slices.Contains(strs(dig(pvc, "spec", "accessModes")), "ReadWriteMany") {
					t.Errorf("claim %s is not ReadWriteMany: replicas on several nodes cannot share it", claim)
				}
			}
		}
	}
	if claims != 1 {
		t.Errorf("the pod mounts %d claims of the manifest, want the ledger's", claims)
	}
	found := false
	for _, cm := range byKind["ConfigMap"] {
		if str(dig(cm, "metadata", "name")) != cmName {
			continue
		}
		found = true
		cfg := decodeConfig(t, "ConfigMap "+cmName, []byte(str(dig(cm, "data", "config.yaml"))))
		if cfg.Lock.Backend != config.BackendEtcd {
			t.Errorf("lock.backend %q, want etcd", cfg.Lock.Backend)
		}
		for _, h := range etcdHosts(t, cfg) {
			if !slices.Contains(services, h) {
				t.Errorf("etcd endpoint host %s is not a Service (%v)", h, services)
			}
		}
		if err := validate(t, cfg); err != nil {
			t.Errorf("ConfigMap %s: %v", cmName, err)
		}
	}
	if !found {
		t.Errorf("the pod's ConfigMap %q is not in the manifest", cmName)
	}
}
