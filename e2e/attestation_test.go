package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

// TestAttestationSelectors runs the real daemon with unix:sha256 and the
// docker attestor on: one Envoy gets its identity by uid and the digest of
// its executable; another only once it is inside a Docker container's
// cgroup that the (fake) Docker Engine API labels app=web.
func TestAttestationSelectors(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	envoyBin, err := harness.EnvoyPath()
	if err != nil {
		t.Fatal(err)
	}
	digest := fileSHA256(t, envoyBin)
	const (
		shaUID, dockerUID = 1106, 1105
		containerID       = "5e2e00000000000000000000000000000000000000000000000000000000abcd"
		imageDigest       = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	)
	shaID := "spiffe://" + harness.DemoTrustDomain + "/by-digest"
	webID := "spiffe://" + harness.DemoTrustDomain + "/web"
	dockerSock := startFakeDockerAPI(t, env, containerID, imageDigest)

	m, err := env.StartMeshid(ctx, harness.MeshidOptions{
		Entries: []harness.Entry{
			{SPIFFEID: shaID, Selectors: []string{fmt.Sprintf("unix:uid:%d", shaUID), "unix:sha256:" + digest}},
			{SPIFFEID: webID, Selectors: []string{fmt.Sprintf("unix:uid:%d", dockerUID), "docker:label:app:web", "docker:image_config_digest:" + imageDigest}},
		},
		ExtraConfig: "unix: {sha256: true}\ndocker: {socket_path: " + dockerSock + "}",
	})
	if err != nil {
		t.Fatal(err)
	}
	sidecar := func(id string) envoy.Sidecar {
		return envoy.Sidecar{SDSSocket: m.SocketPath, SPIFFEID: id, TrustDomain: harness.DemoTrustDomain,
			Inbound: &envoy.Inbound{ListenAddr: env.FreeAddr(), AppAddr: env.FreeAddr(), AuthzAddr: m.AuthzAddr}}
	}

	t.Run("unix:sha256 of the executable", func(t *testing.T) {
		v, err := env.StartEnvoy(ctx, "sha-envoy", sidecar(shaID), shaUID)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.WaitLive(ctx); err != nil {
			t.Fatal(err)
		}
		if own, _ := envoyCertURIs(t, ctx, v); len(own) == 0 || own[0] != shaID {
			t.Fatalf("Envoy holds %v, want %s", own, shaID)
		}
		t.Logf("Envoy (uid %d, executable sha256 %s...) holds %s", shaUID, digest[:12], shaID)
	})

	t.Run("docker labels from the Engine API", func(t *testing.T) {
		cg := "/sys/fs/cgroup/pids/docker/" + containerID
		if err := os.MkdirAll(cg, 0o755); err != nil {
			t.Skipf("cannot make a cgroup v1 pids hierarchy for a pretend container: %v", err)
		}
		v, err := env.StartEnvoy(ctx, "docker-envoy", sidecar(webID), dockerUID)
		if err != nil {
			t.Fatal(err)
		}
		// Outside the container it is just uid 1105: no identity.
		waitFor(t, ctx, "meshid to refuse the Envoy outside the container", func() bool {
			l := logLine(m.Logs(), "no entry matches caller")
			return strings.Contains(l, fmt.Sprintf("unix:uid:%d", dockerUID))
		})
		// Move it in, as dockerd would have started it; its next SDS
		// attempt is attested with the container's labels.
		if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(v.Pid())), 0o644); err != nil {
			t.Skipf("cannot move the Envoy into the pretend container's cgroup: %v", err)
		}
		t.Cleanup(func() {
			os.WriteFile("/sys/fs/cgroup/pids/cgroup.procs", []byte(strconv.Itoa(v.Pid())), 0o644)
			os.Remove(cg)
			os.Remove(filepath.Dir(cg))
		})
		if err := v.WaitLive(ctx); err != nil {
			t.Fatal(err)
		}
		if own, _ := envoyCertURIs(t, ctx, v); len(own) == 0 || own[0] != webID {
			t.Fatalf("Envoy holds %v, want %s", own, webID)
		}
		out := explain(t, env, m, v.Pid())
		for _, want := range []string{"docker:label:app:web", "docker:image_config_digest:" + imageDigest, "match     " + webID} {
			if !strings.Contains(out, want) {
				t.Errorf("explain lacks %q:\n%s", want, out)
			}
		}
		t.Logf("meshid entry explain -pid %d:\n%s", v.Pid(), out)
	})
}

// startFakeDockerAPI serves the Engine API's ping and container inspect
// for one container on a Unix socket inside the world directory.
func startFakeDockerAPI(t *testing.T, env *harness.Env, id, image string) string {
	t.Helper()
	sock := filepath.Join(env.Dir, "docker.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /_ping", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "OK") })
	mux.HandleFunc("GET /containers/{id}/json", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") != id {
			http.Error(w, `{"message":"No such container"}`, http.StatusNotFound)
			return
		}
		fmt.Fprintf(w, `{"Id":%q,"Image":%q,"Config":{"Image":"example/web:1","Labels":{"app":"web"},"Env":["MODE=e2e"]}}`, id, image)
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
