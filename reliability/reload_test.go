//go:build reliability

package reliability

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshid/meshid/test/harness"
)

// Entries files meshid must refuse on reload, whole.
const (
	entriesBadSelector = `entries:
  - spiffe_id: spiffe://example.org/ns/demo/sa/backend
    selectors: ["unix:uid:1101"]
  - spiffe_id: spiffe://example.org/ns/demo/sa/frontend
    selectors:
      - unix:uid
`
	// x509_ttl below the floor made SVIDs that were expired on arrival
	// (issue 13).
	entriesTinyTTL = `entries:
  - spiffe_id: spiffe://example.org/ns/demo/sa/backend
    selectors: ["unix:uid:1101"]
    x509_ttl: 1ns
  - spiffe_id: spiffe://example.org/ns/demo/sa/frontend
    selectors: ["unix:uid:1102"]
`
)

// Policies meshid must refuse on reload: one that does not parse, one that
// parses but does not compile, and the good one after them, which also
// lets the frontend read /admin.
const (
	policyParseError = "package envoy.authz\n\ndefault allow := false\n\nallow if {\n\tinput.x ==\n}\n"
	policyUnsafeVar  = "package envoy.authz\n\ndefault allow := false\n\nallow if {\n\tx == input.parsed_path\n}\n"
	policyAdminToo   = `
# Added by the reliability suite: the frontend may read /admin too.
allow if {
	input.spiffe.source.id == "spiffe://example.org/ns/demo/sa/frontend"
	input.parsed_path == ["admin"]
}
`
)

// TestBadReloadsKeepLastGood keeps requests crossing the demo mesh while
// meshid is handed broken inputs at run time: entries files with a bad
// selector and with an x509_ttl below the floor, a policy that does not
// parse and one that does not compile, and a broken meshid.yaml with a
// SIGHUP (meshid.yaml is read at start only). Each is refused with its
// file:line and counted, the last good entries and policies stay in force
// (checked by real requests: SDS fetches under the Envoys' uids, /hello
// allowed, /admin denied), not one request of the traffic fails, and a
// good change afterwards still takes effect.
func TestBadReloadsKeepLastGood(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	policyDir, err := env.MkdirAll("policies")
	if err != nil {
		t.Fatal(err)
	}
	goodPolicy, err := os.ReadFile(filepath.Join(env.Root, "policies", "envoy", "authz.rego"))
	if err != nil {
		t.Fatal(err)
	}
	if err := harness.WritePolicy(policyDir, "authz.rego", string(goodPolicy)); err != nil {
		t.Fatal(err)
	}
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: harness.DemoEntries(), PolicyDir: policyDir})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.ConfigureAuthz(ctx, map[string]any{"reload_interval": "1s"}); err != nil {
		t.Fatal(err)
	}
	mesh, _ := startMesh(t, ctx, env, m)
	tr := startTraffic(ctx, mesh.FrontendURL+"hello", 2, 50*time.Millisecond)
	defer tr.stop()

	// lastGood checks, with real requests, that the entries and the policy
	// in force are the good ones.
	lastGood := func(t *testing.T, adminStatus int) {
		t.Helper()
		for _, c := range []struct {
			uid uint32
			id  string
		}{{harness.BackendEnvoyUID, harness.BackendID}, {harness.FrontendEnvoyUID, harness.FrontendID}} {
			r := runLoadgen(t, ctx, env, "fetch", c.uid, "fetch", "-socket", m.SocketPath, "-names", c.id, "-n", "3")
			if r.Errors != 0 {
				t.Errorf("uid %d fetching %s: %d of 3 failed: %s", c.uid, c.id, r.Errors, r.FirstError)
			}
		}
		for path, want := range map[string]int{"hello": http.StatusOK, "admin": adminStatus} {
			if status, body, err := harness.Get(ctx, mesh.FrontendURL+path); err != nil || status != want {
				t.Errorf("GET /%s through the mesh: %d %s %v, want %d", path, status, body, err, want)
			}
		}
	}
	lastGood(t, http.StatusForbidden)

	refused := 0
	for _, c := range []struct {
		name, content, want string
	}{
		{"entry with a bad selector", entriesBadSelector, `entries.yaml:6: selector "unix:uid" has no value`},
		{"entry with x509_ttl 1ns", entriesTinyTTL, "entries.yaml:4: x509_ttl 1ns is shorter than the minimum"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := metric(t, ctx, m, "meshid_entries_reload_errors_total")
			if err := writeAtomic(m.EntriesPath, c.content); err != nil {
				t.Fatal(err)
			}
			waitMetric(t, ctx, m, "meshid_entries_reload_errors_total", before+1, 15*time.Second)
			if logs := m.Logs(); !logged(logs, c.want) || !logged(logs, "entries file rejected: keeping the entries in force") {
				t.Errorf("meshid's log does not name the problem %q", c.want)
			}
			lastGood(t, http.StatusForbidden)
			refused++
		})
	}

	t.Run("a good entries change still takes effect", func(t *testing.T) {
		const probeUID, probeID = 1301, "spiffe://example.org/ns/reliability/sa/probe"
		if err := m.WriteEntries(append(harness.DemoEntries(), harness.Entry{SPIFFEID: probeID, Selectors: []string{"unix:uid:1301"}})); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, 15*time.Second, "the probe uid to get its new identity", func() bool {
			return runLoadgen(t, ctx, env, "fetch-probe", probeUID, "fetch", "-socket", m.SocketPath, "-names", probeID, "-n", "1").Errors == 0
		})
		lastGood(t, http.StatusForbidden)
	})

	for _, c := range []struct {
		name, content, want string
	}{
		{"policy that does not parse", policyParseError, "authz.rego:7:1: rego_parse_error"},
		{"policy that does not compile", policyUnsafeVar, "authz.rego:6:2: rego_unsafe_var_error"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := metric(t, ctx, m, "meshid_authz_policy_reload_errors_total")
			if err := harness.WritePolicy(policyDir, "authz.rego", c.content); err != nil {
				t.Fatal(err)
			}
			waitMetric(t, ctx, m, "meshid_authz_policy_reload_errors_total", before+1, 15*time.Second)
			if logs := m.Logs(); !logged(logs, c.want) || !logged(logs, "authz: policy reload failed") {
				t.Errorf("meshid's log does not name the problem %q", c.want)
			}
			lastGood(t, http.StatusForbidden)
			refused++
		})
	}

	t.Run("a good policy change still takes effect", func(t *testing.T) {
		if err := harness.WritePolicy(policyDir, "authz.rego", string(goodPolicy)+policyAdminToo); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, 15*time.Second, "the new policy to allow /admin", func() bool {
			status, _, err := harness.Get(ctx, mesh.FrontendURL+"admin")
			return err == nil && status == http.StatusOK
		})
		lastGood(t, http.StatusOK)
	})

	t.Run("meshid.yaml is not reloaded, not even on SIGHUP", func(t *testing.T) {
		good, err := os.ReadFile(m.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := writeAtomic(m.ConfigPath, string(good)); err != nil {
				t.Error(err)
			}
		}()
		if err := writeAtomic(m.ConfigPath, "trust_domain: [not, a, domain\nnot_a_key: 1\n"); err != nil {
			t.Fatal(err)
		}
		hups := strings.Count(m.Logs(), "SIGHUP: reloading entries")
		if err := m.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, 10*time.Second, "meshid to take the SIGHUP", func() bool {
			return strings.Count(m.Logs(), "SIGHUP: reloading entries") > hups
		})
		time.Sleep(time.Second)
		select {
		case <-m.Done():
			t.Fatalf("meshid exited after SIGHUP with a broken meshid.yaml: %v", m.Wait())
		default:
		}
		if status, body, err := m.Readyz(ctx); err != nil || status != http.StatusOK {
			t.Errorf("/readyz after SIGHUP with a broken meshid.yaml: %d %s %v", status, body, err)
		}
		lastGood(t, http.StatusOK)
		refused++
	})

	reqs := tr.stop()
	failed := 0
	for _, r := range reqs {
		if r.err != nil || r.status != http.StatusOK {
			if failed++; failed <= 5 {
				t.Errorf("traffic: %s, want 200", r)
			}
		}
	}
	report(t, "broken entries (bad selector, x509_ttl 1ns), policies that do not parse or compile, a broken meshid.yaml with SIGHUP: each refused with file:line and counted, the last good kept (real SDS fetches and requests), 0 failed requests in the traffic, good changes after still take effect",
		"%d bad inputs refused; %d requests through the mesh during them, %d failed", refused, len(reqs), failed)
}

// logged reports whether meshid's log has s, as written or as slog's text
// format quotes it inside a value.
func logged(logs, s string) bool {
	return strings.Contains(logs, s) || strings.Contains(logs, strings.Trim(strconv.Quote(s), `"`))
}

// writeAtomic replaces path with content the way editors and ConfigMap
// updates do, so that no reload sees half a file.
func writeAtomic(path, content string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func metric(t *testing.T, ctx context.Context, m *harness.Meshid, series string) float64 {
	t.Helper()
	v, err := m.Metric(ctx, series)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitMetric waits until series reaches at least want.
func waitMetric(t *testing.T, ctx context.Context, m *harness.Meshid, series string, want float64, timeout time.Duration) float64 {
	t.Helper()
	var v float64
	waitFor(t, ctx, timeout, fmt.Sprintf("%s to reach %v", series, want), func() bool {
		v = metric(t, ctx, m, series)
		return v >= want
	})
	return v
}

// waitFor polls cond every 100 ms until it holds, failing t after timeout.
func waitFor(t *testing.T, ctx context.Context, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
