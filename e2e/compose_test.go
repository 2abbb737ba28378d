package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/test/harness"
)

// The compose mesh's identities (compose/entries.yaml: one template entry,
// spiffe://example.org/compose/<service> for uid 101 in a container with
// the mesh label).
const (
	composeWebID = "spiffe://example.org/compose/web"
	composeAPIID = "spiffe://example.org/compose/api"
	composeUser  = "101:101"
)

// TestComposeMesh runs compose/docker-compose.yaml, the file users run with
// `docker compose up`, for real under Podman: podman-compose starts meshid
// (pid: host, reading labels from Podman's Engine API service), three
// Envoy sidecars bootstrapped by `meshid envoy bootstrap` and three apps,
// and every assertion goes through those containers.
func TestComposeMesh(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancel()

	images := map[string]string{}
	for compose, from := range map[string]string{"MESHID_IMAGE": "MESHID_IMAGE", "DEMOAPP_IMAGE": "MESHID_DEMOAPP_IMAGE", "ENVOY_IMAGE": "MESHID_ENVOY_IMAGE"} {
		if images[compose] = os.Getenv(from); images[compose] == "" {
			t.Fatalf("$%s not set: run through `make test`, which builds the images (mk/containers.mk)", from)
		}
	}
	podman, err := env.StartPodman(ctx)
	if err != nil {
		t.Fatal(err)
	}
	webAddr, adminAddr := env.FreeAddr(), env.FreeAddr()
	vars := []string{"ENGINE_SOCKET=" + podman.Socket, "WEB_PORT=" + port(t, webAddr), "MESHID_ADMIN_PORT=" + port(t, adminAddr)}
	for k, v := range images {
		vars = append(vars, k+"="+v)
	}
	start := time.Now()
	mesh, err := podman.ComposeUp(ctx, harness.ComposeSpec{
		File:    filepath.Join(env.Root, "compose", "docker-compose.yaml"),
		Project: fmt.Sprintf("meshid-e2e-%d", os.Getpid()),
		Env:     vars,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("a compose file that does not parse: file and line named, nothing started", func(t *testing.T) {
		good, err := os.ReadFile(filepath.Join(env.Root, "compose", "docker-compose.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		dir, err := env.MkdirAll("broken-compose")
		if err != nil {
			t.Fatal(err)
		}
		// One service's key indented one column short, as a hand edit does.
		broken := strings.Replace(string(good), "\n    pid: host\n", "\n   pid: host\n", 1)
		line := strings.Count(broken[:strings.Index(broken, "   pid: host")], "\n") + 1
		file := filepath.Join(dir, "docker-compose.yaml")
		if err := os.WriteFile(file, []byte(broken), 0o644); err != nil {
			t.Fatal(err)
		}
		bad, err := podman.ComposeUp(ctx, harness.ComposeSpec{File: file, Project: mesh.Project + "-broken", Env: vars})
		want := fmt.Sprintf(`in %q, line %d`, file, line)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("podman-compose up on a broken file: %v\nwant an error %s", err, want)
		}
		if out, err := podman.Podman(ctx, "ps", "-a", "-q", "--filter", "label="+bad.Label()); err != nil || strings.TrimSpace(out) != "" {
			t.Fatalf("containers of the broken project: %q %v", out, err)
		}
		t.Logf("broken compose file refused: %s", want)
	})

	web := "http://" + webAddr + "/call/"
	// The sidecars start after meshid, fetch their certificates and
	// resolve their upstreams by name (again every few seconds, until the
	// upstream's container exists): the mesh is up when web reaches db
	// through api, and db's sidecar answers web itself.
	for url, status := range map[string]int{web + "api/call/db/rows": http.StatusOK, web + "db/rows": http.StatusForbidden} {
		if err := harness.WaitHTTP(ctx, url, status); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("compose mesh up and answering in %v", time.Since(start).Round(100*time.Millisecond))

	t.Run("web calls api, which sees web's SPIFFE ID", func(t *testing.T) {
		seen := callThrough(t, ctx, web+"api/hello", http.StatusOK)
		if seen.Service != "api" || seen.Path != "/hello" || seen.Peer != composeWebID {
			t.Fatalf("api saw %+v, want service api, path /hello, peer %s", seen, composeWebID)
		}
	})

	t.Run("api calls db, which sees api's SPIFFE ID", func(t *testing.T) {
		seen := callThrough(t, ctx, web+"api/call/db/rows", http.StatusOK)
		if seen.Service != "db" || seen.Path != "/rows" || seen.Peer != composeAPIID {
			t.Fatalf("db saw %+v, want service db, path /rows, peer %s", seen, composeAPIID)
		}
	})

	t.Run("web may not call db: 403 by policy", func(t *testing.T) {
		const denials = `meshid_authz_decisions_total{result="deny"}`
		before, err := harness.MetricAt(ctx, adminAddr, denials)
		if err != nil {
			t.Fatal(err)
		}
		status, body, err := harness.Get(ctx, web+"db/rows")
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusForbidden {
			t.Fatalf("GET %sdb/rows: %d %s, want 403 from db's sidecar", web, status, body)
		}
		// The 403 is meshid's decision, not a failed handshake or route.
		if after, err := harness.MetricAt(ctx, adminAddr, denials); err != nil || after != before+1 {
			t.Fatalf("%s went from %v to %v (%v), want one more", denials, before, after, err)
		}
		t.Logf("GET %sdb/rows -> %d, one more deny decision", web, status)
	})

	socketVolume := mesh.Volume("meshid-socket") + ":/run/meshid:ro"
	t.Run("a container without the mesh's labels gets no SVID", func(t *testing.T) {
		out, err := podman.Podman(ctx, "run", "--rm", "--label", mesh.Label(), "--user", composeUser, "-v", socketVolume,
			images["MESHID_IMAGE"], "svid", "fetch", "--socket", "/run/meshid/agent.sock")
		if err == nil || !strings.Contains(out, "no identity issued") {
			t.Fatalf("svid fetch in an unlabelled container: %v\n%s\nwant a refusal: no identity issued", err, out)
		}
		t.Logf("unlabelled container: %s", strings.TrimSpace(out))
	})

	// bundle asks meshid for the trust bundle from a container of the mesh
	// (the template makes it spiffe://example.org/compose/probe): whoever
	// can set a container's labels joins the mesh, which is why the engine's
	// API is the operator's alone.
	bundle := func(t *testing.T) string {
		t.Helper()
		out, err := podman.Podman(ctx, "run", "--rm", "--label", mesh.Label(), "--label", "io.meshid.mesh=demo",
			"--label", "com.docker.compose.service=probe", "--user", composeUser, "-v", socketVolume,
			images["MESHID_IMAGE"], "bundle", "show", "--socket", "/run/meshid/agent.sock")
		if err != nil || !strings.Contains(out, "BEGIN CERTIFICATE") {
			t.Fatalf("bundle show: %v\n%s", err, out)
		}
		return out
	}

	t.Run("meshid killed and restarted: sidecars recover, same trust bundle", func(t *testing.T) {
		before := bundle(t)
		meshid := mesh.Container("meshid")
		// What `docker kill` and `docker start` send.
		for _, call := range []string{"kill", "start"} {
			status, body, err := podman.Engine(ctx, http.MethodPost, "/containers/"+meshid+"/"+call)
			if err != nil || status != http.StatusNoContent {
				t.Fatalf("POST /containers/%s/%s: %d %s %v", meshid, call, status, body, err)
			}
			if call == "kill" {
				waitContainerStopped(t, ctx, podman, meshid)
			}
		}
		if err := harness.WaitHTTP(ctx, "http://"+adminAddr+"/readyz", http.StatusOK); err != nil {
			t.Fatal(err)
		}
		// Every sidecar holds two SDS streams (its certificate and its
		// trust bundle); the restarted meshid sees them all come back.
		const streams = `meshid_sds_streams{api="sotw"}`
		for {
			n, err := harness.MetricAt(ctx, adminAddr, streams)
			if err != nil {
				t.Fatal(err)
			}
			if n == 6 {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s = %v after the restart, want 6 (3 sidecars × 2)", streams, n)
			case <-time.After(200 * time.Millisecond):
			}
		}
		seen := callThrough(t, ctx, web+"api/call/db/rows", http.StatusOK)
		if seen.Peer != composeAPIID {
			t.Fatalf("db saw %+v after the restart, want peer %s", seen, composeAPIID)
		}
		if after := bundle(t); after != before {
			t.Fatalf("trust bundle changed across the restart:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}

// echoed is what a demoapp backend answers.
type echoed struct{ Service, Path, Peer string }

func callThrough(t *testing.T, ctx context.Context, url string, want int) echoed {
	t.Helper()
	status, body, err := harness.Get(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if status != want {
		t.Fatalf("GET %s: %d %s, want %d", url, status, body, want)
	}
	var seen echoed
	if err := json.Unmarshal(body, &seen); err != nil {
		t.Fatalf("GET %s: %q: %v", url, body, err)
	}
	t.Logf("GET %s -> %d %s", url, status, strings.TrimSpace(string(body)))
	return seen
}

func waitContainerStopped(t *testing.T, ctx context.Context, podman *harness.Podman, name string) {
	t.Helper()
	for {
		status, body, err := podman.Engine(ctx, http.MethodGet, "/containers/"+name+"/json")
		if err != nil || status != http.StatusOK {
			t.Fatalf("GET /containers/%s/json: %d %s %v", name, status, body, err)
		}
		var in struct{ State struct{ Running bool } }
		if err := json.Unmarshal(body, &in); err != nil {
			t.Fatal(err)
		}
		if !in.State.Running {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s still running after kill", name)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
