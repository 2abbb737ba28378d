package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

// TestEntriesHotReload changes entries.yaml under a running mesh: an Envoy
// no entry names gets its certificate once one does, without restarting
// anything; a broken file is refused with its line and changes nothing;
// removing the entry takes the identity away again. `meshid entry explain`
// asks the running daemon about the Envoy along the way.
func TestEntriesHotReload(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	mesh, err := env.StartDemoMesh(ctx, harness.DemoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	m := mesh.Meshid
	const lateUID = 1104
	lateID := "spiffe://" + harness.DemoTrustDomain + "/ns/demo/sa/late"
	late, err := env.StartEnvoy(ctx, "late-envoy", envoy.Sidecar{
		SDSSocket:   m.SocketPath,
		SPIFFEID:    lateID,
		TrustDomain: harness.DemoTrustDomain,
		Inbound: &envoy.Inbound{
			ListenAddr: env.FreeAddr(),
			AppAddr:    mesh.BackendApp.Addr,
			AuthzAddr:  m.AuthzAddr,
		},
	}, lateUID)
	if err != nil {
		t.Fatal(err)
	}
	uidSel := fmt.Sprintf("unix:uid:%d", lateUID)
	waitFor(t, ctx, "meshid to refuse the unregistered Envoy", func() bool {
		return strings.Contains(m.Logs(), "no entry matches caller") && strings.Contains(m.Logs(), uidSel)
	})

	t.Run("explain says why the Envoy gets nothing", func(t *testing.T) {
		out := explain(t, env, m, late.Pid())
		for _, want := range []string{uidSel, "no match  " + harness.BackendID, "lacks unix:uid:1101", "no entry matches"} {
			if !strings.Contains(out, want) {
				t.Errorf("meshid entry explain -pid %d lacks %q:\n%s", late.Pid(), want, out)
			}
		}
		t.Logf("meshid entry explain -pid %d:\n%s", late.Pid(), out)
	})

	// What explain tells is the entry table and other processes' selectors:
	// the Envoy's own uid gets none of it, on TCP or on the admin socket.
	t.Run("explain is root's only", func(t *testing.T) {
		out, err := m.CLI(ctx, lateUID, "entry", "explain", "-config", m.ConfigPath, "-pid", strconv.Itoa(late.Pid()))
		if err == nil || !strings.Contains(out, "its admin socket is root's only (mode 0600)") || strings.Contains(out, uidSel) {
			t.Errorf("uid %d: meshid entry explain = %v:\n%s\nwant a refusal that reveals nothing", lateUID, err, out)
		}
		resp, err := http.Get("http://" + m.AdminAddr + "/explain?pid=" + strconv.Itoa(late.Pid()))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), uidSel) {
			t.Errorf("GET /explain on admin.address = %d %q, want 404 and nothing about the process", resp.StatusCode, body)
		}
	})

	t.Run("a broken file is refused and the mesh carries on", func(t *testing.T) {
		bad := append(harness.DemoEntries(), harness.Entry{SPIFFEID: lateID, Selectors: []string{"unix:uid"}})
		if err := m.WriteEntries(bad); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "meshid to reject the broken entries file", func() bool {
			return strings.Contains(m.Logs(), "entries file rejected")
		})
		line := logLine(m.Logs(), "entries file rejected")
		if !strings.Contains(line, "entries.yaml:") || !strings.Contains(line, `selector \"unix:uid\" has no value`) {
			t.Errorf("the rejection does not give file:line and the reason:\n%s", line)
		}
		if n := metric(t, ctx, m, "meshid_entries_reload_errors_total"); n != 1 {
			t.Errorf("meshid_entries_reload_errors_total = %v, want 1", n)
		}
		if n := metric(t, ctx, m, "meshid_entries"); n != 2 {
			t.Errorf("meshid_entries = %v after a rejected file, want the last good 2", n)
		}
		if status, _, err := harness.Get(ctx, mesh.FrontendURL+"hello"); err != nil || status != http.StatusOK {
			t.Fatalf("GET /hello after a rejected entries file: %d %v", status, err)
		}
		t.Logf("meshid: %s", line)
	})

	t.Run("an added entry reaches the waiting Envoy", func(t *testing.T) {
		added := time.Now()
		if err := m.WriteEntries(append(harness.DemoEntries(), harness.Entry{SPIFFEID: lateID, Selectors: []string{uidSel}})); err != nil {
			t.Fatal(err)
		}
		if err := late.WaitLive(ctx); err != nil {
			t.Fatal(err)
		}
		took := time.Since(added)
		own, _ := envoyCertURIs(t, ctx, late)
		if !slices.Contains(own, lateID) {
			t.Fatalf("the Envoy holds %v, want %s", own, lateID)
		}
		chain := presentedChain(t, late.Sidecar.Inbound.ListenAddr)
		if len(chain) == 0 || len(chain[0].URIs) != 1 || chain[0].URIs[0].String() != lateID {
			t.Fatalf("the Envoy presents %v, want its new SVID", chain)
		}
		if err := chain[0].CheckSignatureFrom(activeCA(t, m)); err != nil {
			t.Fatalf("its SVID is not from meshid's CA: %v", err)
		}
		if n := metric(t, ctx, m, "meshid_entries"); n != 3 {
			t.Errorf("meshid_entries = %v, want 3", n)
		}
		t.Logf("entry added -> Envoy live with %s in %s (no restart: meshid pid %d, Envoy pid %d)", lateID, took.Round(time.Millisecond), m.Pid(), late.Pid())
	})

	t.Run("a removed entry takes the identity away", func(t *testing.T) {
		if err := m.WriteEntries(harness.DemoEntries()); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "meshid to re-match the Envoy's subscription", func() bool {
			for _, l := range strings.Split(m.Logs(), "\n") {
				if strings.Contains(l, "entries changed the caller's identities") && strings.Contains(l, "uid="+strconv.Itoa(lateUID)) && strings.Contains(l, "after=[]") {
					return true
				}
			}
			return false
		})
		out := explain(t, env, m, late.Pid())
		if !strings.Contains(out, "no entry matches") {
			t.Errorf("explain after the removal:\n%s", out)
		}
		// The others kept theirs.
		if status, _, err := harness.Get(ctx, mesh.FrontendURL+"hello"); err != nil || status != http.StatusOK {
			t.Fatalf("GET /hello after the removal: %d %v", status, err)
		}
	})

	t.Run("SIGHUP reloads", func(t *testing.T) {
		if err := m.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "meshid to reload on SIGHUP", func() bool {
			return strings.Contains(m.Logs(), "SIGHUP: reloading entries")
		})
		select {
		case <-m.Done():
			t.Fatal("meshid exited on SIGHUP")
		case <-time.After(200 * time.Millisecond):
		}
	})
}

// explain runs `meshid entry explain` against the running daemon.
func explain(t *testing.T, env *harness.Env, m *harness.Meshid, pid int) string {
	t.Helper()
	bin, err := env.Binary("meshid")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "entry", "explain", "-config", m.ConfigPath, "-pid", strconv.Itoa(pid)).CombinedOutput()
	if err != nil {
		t.Fatalf("meshid entry explain: %v\n%s", err, out)
	}
	return string(out)
}

func metric(t *testing.T, ctx context.Context, m *harness.Meshid, series string) float64 {
	t.Helper()
	v, err := m.Metric(ctx, series)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// envoyCertURIs returns the URI SANs of an Envoy's own certificates and of
// the CAs it trusts.
func envoyCertURIs(t *testing.T, ctx context.Context, v *harness.Envoy) (own, roots []string) {
	t.Helper()
	certs, err := v.Certs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range certs {
		if c.CA {
			roots = append(roots, c.URIs...)
		} else {
			own = append(own, c.URIs...)
		}
	}
	return own, roots
}

func logLine(logs, substr string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, substr) {
			return l
		}
	}
	return ""
}
