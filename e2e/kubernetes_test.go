package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"gopkg.in/yaml.v3"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/test/harness"
)

// The parts of the Kubernetes objects the test checks against each other.
type (
	kubeMeta struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	}
	kubeWorkload struct {
		Kind     string   `json:"kind"`
		Metadata kubeMeta `json:"metadata"`
		Spec     struct {
			Template struct {
				Metadata struct {
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
				Spec podSpec `json:"spec"`
			} `json:"template"`
		} `json:"spec"`
	}
	kubeService struct {
		Metadata kubeMeta `json:"metadata"`
		Spec     struct {
			Selector map[string]string    `json:"selector"`
			Ports    []struct{ Port int } `json:"ports"`
		} `json:"spec"`
	}
	podSpec struct {
		ServiceAccountName string          `json:"serviceAccountName"`
		HostPID            bool            `json:"hostPID"`
		HostNetwork        bool            `json:"hostNetwork"`
		InitContainers     []kubeContainer `json:"initContainers"`
		Containers         []kubeContainer `json:"containers"`
		Volumes            []kubeVolume    `json:"volumes"`
	}
	kubeContainer struct {
		Name          string     `json:"name"`
		Image         string     `json:"image"`
		Args          []string   `json:"args"`
		Env           []kubeEnv  `json:"env"`
		StartupProbe  *kubeProbe `json:"startupProbe"`
		LivenessProbe *kubeProbe `json:"livenessProbe"`
		VolumeMounts  []struct {
			Name      string `json:"name"`
			MountPath string `json:"mountPath"`
			ReadOnly  bool   `json:"readOnly"`
		} `json:"volumeMounts"`
	}
	kubeProbe struct {
		Exec *struct {
			Command []string `json:"command"`
		} `json:"exec"`
	}
	kubeEnv struct {
		Name      string `json:"name"`
		ValueFrom *struct {
			FieldRef struct {
				FieldPath string `json:"fieldPath"`
			} `json:"fieldRef"`
		} `json:"valueFrom"`
	}
	kubeVolume struct {
		Name     string `json:"name"`
		HostPath *struct {
			Path string `json:"path"`
		} `json:"hostPath"`
		ConfigMap *struct {
			Name string `json:"name"`
		} `json:"configMap"`
		Secret *struct {
			SecretName string `json:"secretName"`
		} `json:"secret"`
		EmptyDir *struct{} `json:"emptyDir"`
	}
	kubeConfigMap struct {
		Metadata kubeMeta          `json:"metadata"`
		Data     map[string]string `json:"data"`
	}
)

// TestKubernetesManifests creates every object of deploy/kubernetes and its
// example in a real kube-apiserver (with its etcd, on loopback) with strict
// field validation, sees a malformed DaemonSet refused, checks that the
// RBAC grants meshid what the kubelet will ask for and nothing more, loads
// the ConfigMaps' config, entries and policies with meshid's own code,
// checks that the paths, mounts and identities of the objects agree, and
// runs each sidecar's bootstrap command and the real Envoy on its output.
// There is no kubelet: no pod runs (docs/kubernetes.md).
func TestKubernetesManifests(t *testing.T) {
	env := harness.ForTest(t)
	ctx := t.Context()
	dirs := []string{filepath.Join(env.Root, "deploy/kubernetes"), filepath.Join(env.Root, "deploy/kubernetes/example")}
	var objs []harness.KubeObject
	for _, dir := range dirs {
		objs = append(objs, kustomizeResources(t, dir)...)
	}

	kube, err := env.StartKubeAPI(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Each object as shipped: a server-side dry run, then for real, both
	// refusing any field the API does not know.
	stored := map[string][]byte{} // "Kind ns/name" -> the object the server stored
	for _, o := range objs {
		if _, err := kube.Create(ctx, o, harness.CreateOptions{DryRun: true}); err != nil {
			t.Fatalf("dry run: %v", err)
		}
		body, err := kube.Create(ctx, o, harness.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		path, err := kube.ObjectPath(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kube.Get(ctx, path); err != nil {
			t.Fatalf("%s created but not stored: %v", o, err)
		}
		stored[o.Kind+" "+o.Namespace+"/"+o.Name] = body
		t.Logf("created %s", o)
	}

	t.Run("a malformed DaemonSet is refused", func(t *testing.T) {
		ds := find(t, objs, "DaemonSet", "meshid-system", "meshid")
		for _, tt := range []struct {
			name   string
			mutate func(spec map[string]any)
			want   string
		}{
			{"a misspelt field", func(spec map[string]any) { spec["hostPid"] = true }, `unknown field "spec.template.spec.hostPid"`},
			{"a field of the wrong type", func(spec map[string]any) { spec["hostPID"] = "yes" }, "spec.template.spec.hostPID"},
		} {
			var v map[string]any
			if err := json.Unmarshal(ds.JSON, &v); err != nil {
				t.Fatal(err)
			}
			v["metadata"].(map[string]any)["name"] = "meshid-malformed"
			tt.mutate(v["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any))
			bad := ds
			bad.Name = "meshid-malformed"
			if bad.JSON, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
			for _, dry := range []bool{true, false} {
				_, err := kube.Create(ctx, bad, harness.CreateOptions{DryRun: dry})
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("%s (dry run %v): %v, want an error with %q", tt.name, dry, err, tt.want)
				}
				t.Logf("%s (dry run %v): %v", tt.name, dry, err)
			}
		}
		path, err := kube.ObjectPath(ctx, ds)
		if err != nil {
			t.Fatal(err)
		}
		status, _, err := kube.Do(ctx, http.MethodGet, strings.TrimSuffix(path, ds.Name)+"meshid-malformed", nil)
		if err != nil || status != http.StatusNotFound {
			t.Fatalf("GET the refused DaemonSet: %d %v, want 404", status, err)
		}
	})

	t.Run("RBAC grants the kubelet's pod list and nothing else", func(t *testing.T) {
		user := "system:serviceaccount:meshid-system:meshid"
		groups := []string{"system:serviceaccounts", "system:serviceaccounts:meshid-system", "system:authenticated"}
		for _, tt := range []struct {
			verb, resource, sub, ns string
			want                    bool
		}{
			// What the kubelet asks about GET /pods (KubeletFineGrainedAuthz).
			{"get", "nodes", "pods", "", true},
			{"get", "nodes", "proxy", "", false}, // exec and attach through the kubelet
			{"get", "nodes", "", "", false},
			{"list", "pods", "", "", false},
			{"get", "secrets", "", "meshid-system", false},
			{"get", "configmaps", "", "meshid-system", false},
		} {
			review, _ := json.Marshal(map[string]any{
				"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
				"spec": map[string]any{"user": user, "groups": groups, "resourceAttributes": map[string]any{
					"verb": tt.verb, "resource": tt.resource, "subresource": tt.sub, "namespace": tt.ns, "name": "node-1",
				}},
			})
			status, body, err := kube.Do(ctx, http.MethodPost, "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
			if err != nil || status != http.StatusCreated {
				t.Fatalf("SubjectAccessReview: %d %v %s", status, err, body)
			}
			var got struct {
				Status struct {
					Allowed bool `json:"allowed"`
				} `json:"status"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			if got.Status.Allowed != tt.want {
				t.Errorf("%s may %s %s/%s: %v, want %v", user, tt.verb, tt.resource, tt.sub, got.Status.Allowed, tt.want)
			}
		}
	})

	// meshid's files, as the DaemonSet's volumes put them, read back from
	// the API server.
	files := t.TempDir()
	configMaps := map[string]kubeConfigMap{}
	for key, body := range stored {
		if !strings.HasPrefix(key, "ConfigMap ") {
			continue
		}
		var cm kubeConfigMap
		if err := json.Unmarshal(body, &cm); err != nil {
			t.Fatal(err)
		}
		configMaps[cm.Metadata.Name] = cm
		dir := filepath.Join(files, cm.Metadata.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range cm.Data {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfgPath := filepath.Join(files, "meshid-config", "meshid.yaml")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatalf("the config in ConfigMap meshid-config: %v", err)
	}
	if cfg.K8s == nil {
		t.Fatal("the config does not enable k8s attestation")
	}
	var ds kubeWorkload
	decode(t, stored["DaemonSet meshid-system/meshid"], &ds)
	pod := ds.Spec.Template.Spec
	meshid := container(t, pod.Containers, "meshid")
	entriesFile := hostFile(t, files, pod, meshid, cfg.EntriesFile)
	policyDir := hostFile(t, files, pod, meshid, cfg.Authz.PolicyDir)

	t.Run("the DaemonSet mounts what the config names", func(t *testing.T) {
		if !pod.HostPID || !pod.HostNetwork {
			t.Errorf("hostPID %v, hostNetwork %v: meshid needs the host's pids (SO_PEERCRED, /proc) and its loopback (the kubelet)", pod.HostPID, pod.HostNetwork)
		}
		if i := slices.Index(meshid.Args, "--config"); i < 0 || i+1 == len(meshid.Args) ||
			hostFile(t, files, pod, meshid, meshid.Args[i+1]) != cfgPath {
			t.Errorf("meshid runs with %v, not ConfigMap meshid-config's meshid.yaml", meshid.Args)
		}
		for _, f := range []struct{ path, configMap string }{{cfg.EntriesFile, "meshid-entries"}, {cfg.Authz.PolicyDir + "/", "meshid-policies"}} {
			v := mountOf(t, pod, meshid, filepath.Dir(f.path))
			if v.ConfigMap == nil || v.ConfigMap.Name != f.configMap {
				t.Errorf("%s is not from ConfigMap %s: %+v", f.path, f.configMap, v)
			}
		}
		for _, p := range []string{cfg.SocketPath, strings.TrimPrefix(cfg.Authz.Address, config.UnixPrefix), cfg.DataDir + "/", cfg.AdminSocketPath()} {
			if v := mountOf(t, pod, meshid, filepath.Dir(p)); v.HostPath == nil {
				t.Errorf("%s is not on a hostPath: %+v", p, v)
			}
		}
		if admin, sock := mountOf(t, pod, meshid, filepath.Dir(cfg.AdminSocketPath())), mountOf(t, pod, meshid, filepath.Dir(cfg.SocketPath)); admin.Name == sock.Name {
			t.Error("the root-only admin socket is in the directory workload pods mount")
		}
		if u := cfg.CA.Upstream; u == nil {
			t.Error("no ca.upstream: SVIDs of one node would not verify on another")
		} else {
			for _, p := range []string{u.CertFile, u.KeyFile, u.BundleFile} {
				if v := mountOf(t, pod, meshid, filepath.Dir(p)); v.Secret == nil {
					t.Errorf("%s is not from a Secret: %+v", p, v)
				}
			}
		}
		if n := cfg.K8s.KubeletServerNameEnv; !slices.ContainsFunc(meshid.Env, func(e kubeEnv) bool {
			return e.Name == n && e.ValueFrom != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
		}) {
			t.Errorf("k8s.kubelet_server_name_env %q is not set from spec.nodeName", n)
		}
		// The probes run the binary where the Dockerfile's meshid image
		// has it.
		dockerfile, err := os.ReadFile(filepath.Join(env.Root, "Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?s)AS meshid\n.*?ENTRYPOINT \["([^"]+)"\]`).FindSubmatch(dockerfile)
		if m == nil {
			t.Fatal("no ENTRYPOINT in the Dockerfile's meshid stage")
		}
		for _, p := range []*kubeProbe{meshid.StartupProbe, meshid.LivenessProbe} {
			if p == nil || p.Exec == nil || len(p.Exec.Command) == 0 || p.Exec.Command[0] != string(m[1]) {
				t.Errorf("probe %+v does not run the image's %s", p, m[1])
			}
		}
		if pod.ServiceAccountName != "meshid" {
			t.Errorf("the DaemonSet runs as service account %q, not the one RBAC binds", pod.ServiceAccountName)
		}
	})

	bin, err := env.Binary("meshid")
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString(cfg.TrustDomain)
	entries, err := identity.LoadEntries(entriesFile, td)
	if err != nil {
		t.Fatalf("the entries in ConfigMap meshid-entries: %v", err)
	}
	t.Run("entries and policies pass meshid's own checks", func(t *testing.T) {
		for _, args := range [][]string{
			{"entry", "lint", "--config", cfgPath, "--entries", entriesFile},
			{"policy", "test", policyDir},
		} {
			out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
			if err != nil {
				t.Errorf("meshid %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			t.Logf("meshid %s:\n%s", strings.Join(args, " "), out)
		}
	})

	t.Run("each sidecar gets its identity and a bootstrap Envoy accepts", func(t *testing.T) {
		n := 0
		sidecarIDs := map[string]string{} // Deployment key -> its sidecar's SPIFFE ID
		var upstreams []string            // NAMESPACE UPSTREAM, of every sidecar
		for key, body := range stored {
			if !strings.HasPrefix(key, "Deployment ") {
				continue
			}
			var d kubeWorkload
			decode(t, body, &d)
			spec := d.Spec.Template.Spec
			boot := container(t, spec.InitContainers, "envoy-bootstrap")
			sidecar := container(t, spec.Containers, "envoy")
			n++

			// The arguments as the kubelet expands them for this pod.
			vars := map[string]string{}
			for _, e := range boot.Env {
				switch e.ValueFrom.FieldRef.FieldPath {
				case "metadata.namespace":
					vars[e.Name] = d.Metadata.Namespace
				case "spec.serviceAccountName":
					vars[e.Name] = spec.ServiceAccountName
				default:
					t.Fatalf("%s: unexpected env %s", key, e.Name)
				}
			}
			out := filepath.Join(t.TempDir(), "envoy.yaml")
			var args []string
			var spiffeID, output string
			for _, a := range boot.Args {
				a = expandKubeVars(a, vars)
				switch {
				case strings.HasPrefix(a, "--spiffe-id="):
					spiffeID = strings.TrimPrefix(a, "--spiffe-id=")
				case strings.HasPrefix(a, "--output="):
					output, a = strings.TrimPrefix(a, "--output="), "--output="+out
				case strings.HasPrefix(a, "--socket="):
					if p := strings.TrimPrefix(a, "--socket="); p != cfg.SocketPath {
						t.Errorf("%s: the sidecar dials %s, meshid serves %s", key, p, cfg.SocketPath)
					}
				case strings.HasPrefix(a, "--upstream="):
					upstreams = append(upstreams, d.Metadata.Namespace+" "+strings.TrimPrefix(a, "--upstream="))
				case strings.HasPrefix(a, "--authz="):
					if p := strings.TrimPrefix(a, "--authz="); p != cfg.Authz.Address {
						t.Errorf("%s: the sidecar asks ext_authz at %s, meshid serves %s", key, p, cfg.Authz.Address)
					}
				}
				args = append(args, a)
			}
			if res, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err != nil {
				t.Fatalf("%s: meshid %s: %v\n%s", key, strings.Join(args, " "), err, res)
			}
			if err := harness.EnvoyValidate(ctx, out); err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			if !slices.Contains(sidecar.Args, output) || mountOf(t, spec, sidecar, filepath.Dir(output)).EmptyDir == nil ||
				mountOf(t, spec, boot, filepath.Dir(output)).EmptyDir == nil {
				t.Errorf("%s: the sidecar does not run the bootstrap written to %s: %v", key, output, sidecar.Args)
			}
			// The sidecar reaches the same host directory meshid serves in.
			socketDir := filepath.Dir(cfg.SocketPath)
			if got, want := mountOf(t, spec, sidecar, socketDir).HostPath, mountOf(t, pod, meshid, socketDir).HostPath; got == nil || got.Path != want.Path {
				t.Errorf("%s: the sidecar's %s is %+v, meshid's is hostPath %s", key, socketDir, got, want.Path)
			}

			// What meshid would attest for the pod's containers, and which
			// entries match: the sidecar exactly its own ID, the app none.
			for _, c := range spec.Containers {
				sels := []attestor.Selector{{Type: "k8s", Value: "ns:" + d.Metadata.Namespace}, {Type: "k8s", Value: "sa:" + spec.ServiceAccountName},
					{Type: "k8s", Value: "container-name:" + c.Name}}
				var ids []string
				for _, e := range entries {
					got, ok, err := e.For(sels)
					if err != nil {
						t.Errorf("%s: container %s: entry %s: %v", key, c.Name, e.Source, err)
					}
					if ok {
						ids = append(ids, got.SPIFFEID.String())
					}
				}
				want := []string(nil)
				if c.Name == sidecar.Name {
					want = []string{spiffeID}
				}
				if !slices.Equal(ids, want) {
					t.Errorf("%s: container %s gets %v from the entries, want %v", key, c.Name, ids, want)
				}
			}
			sidecarIDs[key] = spiffeID
			t.Logf("%s: sidecar %s, bootstrap valid", key, spiffeID)
		}
		if n == 0 {
			t.Fatal("no example Deployment")
		}

		// Each upstream is a Service of the manifests, by its cluster DNS
		// name and port, whose pods' sidecars have the SPIFFE ID the
		// caller's sidecar demands.
		for _, u := range upstreams {
			ns, up, _ := strings.Cut(u, " ")
			m := regexp.MustCompile(`^[a-z0-9-]+=(spiffe://[^@]+)@([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)$`).FindStringSubmatch(up)
			if m == nil {
				t.Errorf("upstream %s (namespace %s): want NAME=ID@SERVICE.NAMESPACE.svc.cluster.local:PORT", up, ns)
				continue
			}
			id, svcName, svcNS, port := m[1], m[2], m[3], m[4]
			body, ok := stored["Service "+svcNS+"/"+svcName]
			if !ok {
				t.Errorf("upstream %s: no Service %s/%s", up, svcNS, svcName)
				continue
			}
			var svc kubeService
			decode(t, body, &svc)
			if !slices.ContainsFunc(svc.Spec.Ports, func(p struct{ Port int }) bool { return strconv.Itoa(p.Port) == port }) {
				t.Errorf("upstream %s: Service %s/%s has no port %s", up, svcNS, svcName, port)
			}
			var backends []string
			for key, body := range stored {
				var d kubeWorkload
				if !strings.HasPrefix(key, "Deployment "+svcNS+"/") {
					continue
				}
				decode(t, body, &d)
				selected := len(svc.Spec.Selector) > 0
				for k, v := range svc.Spec.Selector {
					selected = selected && d.Spec.Template.Metadata.Labels[k] == v
				}
				if selected {
					backends = append(backends, sidecarIDs[key])
				}
			}
			if len(backends) == 0 || slices.ContainsFunc(backends, func(b string) bool { return b != id }) {
				t.Errorf("upstream %s: the Service's pods have sidecars %v, the caller demands %s", up, backends, id)
			}
		}
		if len(upstreams) == 0 {
			t.Error("no sidecar calls an upstream")
		}
	})
}

// kustomizeResources reads the manifests a kustomization.yaml lists, in its
// order, and checks that it lists every manifest in its directory.
func kustomizeResources(t *testing.T, dir string) []harness.KubeObject {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `yaml:"resources"`
	}
	if err := yaml.Unmarshal(data, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	var names []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			names = append(names, b)
		}
	}
	listed := slices.Clone(k.Resources)
	sort.Strings(listed)
	if !slices.Equal(listed, names) {
		t.Fatalf("%s/kustomization.yaml lists %v; the directory has %v", dir, k.Resources, names)
	}
	var objs []harness.KubeObject
	for _, r := range k.Resources {
		o, err := harness.ReadManifests(filepath.Join(dir, r))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o...)
	}
	return objs
}

func find(t *testing.T, objs []harness.KubeObject, kind, ns, name string) harness.KubeObject {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Namespace == ns && o.Name == name {
			return o
		}
	}
	t.Fatalf("no %s %s/%s in the manifests", kind, ns, name)
	return harness.KubeObject{}
}

func decode(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatal(err)
	}
}

func container(t *testing.T, cs []kubeContainer, name string) kubeContainer {
	t.Helper()
	i := slices.IndexFunc(cs, func(c kubeContainer) bool { return c.Name == name })
	if i < 0 {
		t.Fatalf("no container %s", name)
	}
	return cs[i]
}

// mountOf returns the volume that container c sees at dir.
func mountOf(t *testing.T, pod podSpec, c kubeContainer, dir string) kubeVolume {
	t.Helper()
	v, _ := mount(t, pod, c, dir)
	return v
}

// mount returns the volume and mount path that container c sees at dir:
// the mount with the longest mountPath that is dir or above it.
func mount(t *testing.T, pod podSpec, c kubeContainer, dir string) (kubeVolume, string) {
	t.Helper()
	dir = filepath.Clean(dir)
	var best, bestPath string
	for _, m := range c.VolumeMounts {
		mp := filepath.Clean(m.MountPath)
		if (dir == mp || strings.HasPrefix(dir, mp+"/")) && len(mp) > len(bestPath) {
			best, bestPath = m.Name, mp
		}
	}
	if best == "" {
		t.Fatalf("container %s mounts nothing at %s", c.Name, dir)
	}
	i := slices.IndexFunc(pod.Volumes, func(v kubeVolume) bool { return v.Name == best })
	if i < 0 {
		t.Fatalf("container %s mounts volume %s, which the pod does not have", c.Name, best)
	}
	return pod.Volumes[i], bestPath
}

// hostFile is where this test wrote the ConfigMap file that container c
// sees at path.
func hostFile(t *testing.T, files string, pod podSpec, c kubeContainer, path string) string {
	t.Helper()
	v, mp := mount(t, pod, c, path)
	if v.ConfigMap == nil {
		t.Fatalf("container %s: %s is not from a ConfigMap", c.Name, path)
	}
	rel, err := filepath.Rel(mp, filepath.Clean(path))
	if err != nil {
		t.Fatal(err)
	}
	host := filepath.Join(files, v.ConfigMap.Name, rel)
	if _, err := os.Stat(host); err != nil {
		t.Fatalf("container %s: %s: ConfigMap %s has no such key (%v)", c.Name, path, v.ConfigMap.Name, err)
	}
	return host
}

var kubeVar = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// expandKubeVars does what the kubelet does to a container's arguments:
// $(NAME) becomes the value of the container's env NAME.
func expandKubeVars(s string, vars map[string]string) string {
	return kubeVar.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := vars[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}
