package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/node"
	"github.com/meshid/meshid/test/harness"
)

// TestStatus runs meshid with two real Envoys: one configured as the
// generator writes it, and one whose bootstrap asks for its trust bundle
// (ROOTCA) as its certificate, a mistake in a hand-written bootstrap that
// Envoy rejects. `meshid status --json` (as root, on the admin socket)
// must show the first Envoy's stream with its pid, uid and SPIFFE ID and
// the serial of the SVID that Envoy serves (its admin /certs), and the
// second's NACK with Envoy's message; the table names both.
func TestStatus(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: harness.DemoEntries()})
	if err != nil {
		t.Fatal(err)
	}
	sidecar := func(id string) envoy.Sidecar {
		return envoy.Sidecar{
			SDSSocket: m.SocketPath, SPIFFEID: id, TrustDomain: harness.DemoTrustDomain,
			Inbound: &envoy.Inbound{ListenAddr: env.FreeAddr(), AppAddr: env.FreeAddr(), AuthzAddr: m.AuthzAddr},
		}
	}
	good, err := env.StartEnvoy(ctx, "backend-envoy", sidecar(harness.BackendID), harness.BackendEnvoyUID)
	if err != nil {
		t.Fatal(err)
	}
	if err := good.WaitLive(ctx); err != nil {
		t.Fatal(err)
	}
	wrongCert := []byte(`tls_certificate_sds_secret_configs: [{name: "` + harness.FrontendID + `"`)
	bad, err := env.StartEnvoyEdited(ctx, "frontend-envoy", sidecar(harness.FrontendID), harness.FrontendEnvoyUID, func(b []byte) []byte {
		if !bytes.Contains(b, wrongCert) {
			t.Fatalf("the bootstrap no longer has %s; update the test's edit", wrongCert)
		}
		return bytes.ReplaceAll(b, wrongCert, []byte(`tls_certificate_sds_secret_configs: [{name: "ROOTCA"`))
	})
	if err != nil {
		t.Fatal(err)
	}

	status := func() node.Status {
		t.Helper()
		out, err := m.CLI(ctx, 0, "status", "-config", m.ConfigPath, "-json")
		if err != nil {
			t.Fatalf("meshid status -json: %v\n%s", err, out)
		}
		var st node.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("meshid status -json: %v\n%s", err, out)
		}
		return st
	}
	var st node.Status
	var nack *node.SDSStream
	for nack == nil {
		st = status()
		for i, s := range st.SDSStreams {
			if s.PID == int32(bad.Pid()) && s.LastNACK != nil {
				nack = &st.SDSStreams[i]
			}
		}
		if nack == nil {
			select {
			case <-ctx.Done():
				t.Fatalf("no NACK from the misconfigured Envoy (pid %d) in meshid status: %+v", bad.Pid(), st.SDSStreams)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	if nack.UID != harness.FrontendEnvoyUID || nack.LastNACK.Message == "" || !slices.Contains(nack.SPIFFEIDs, harness.FrontendID) {
		t.Errorf("the NACKing stream %+v, want the frontend Envoy's with Envoy's message", *nack)
	}
	t.Logf("Envoy's NACK as meshid status shows it: version %s: %s", nack.LastNACK.Version, nack.LastNACK.Message)
	if n, err := m.Metric(ctx, `meshid_sds_nacks_total{api="sotw"}`); err != nil || n < 1 {
		t.Errorf(`meshid_sds_nacks_total{api="sotw"} = %v (%v), want the NACK counted`, n, err)
	}

	// The good Envoy: its stream holds the SVID it serves.
	certs, err := good.Certs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var served string
	for _, c := range certs {
		if !c.CA && slices.Contains(c.URIs, harness.BackendID) {
			served = c.SerialNumber
		}
	}
	if served == "" {
		t.Fatalf("the backend Envoy serves no SVID for %s: %+v", harness.BackendID, certs)
	}
	var found bool
	for _, s := range st.SDSStreams {
		if s.PID != int32(good.Pid()) {
			continue
		}
		if s.UID != harness.BackendEnvoyUID || !slices.Contains(s.SPIFFEIDs, harness.BackendID) || len(s.Selectors) == 0 || s.LastACK.IsZero() {
			t.Errorf("the backend Envoy's stream %+v, want its uid, SPIFFE ID, selectors and an ACK", s)
		}
		for _, r := range s.Resources {
			if r.Name == harness.BackendID {
				found = true
				if r.Serial != served || r.Version == "" {
					t.Errorf("meshid status says the backend Envoy holds serial %s (version %q); Envoy's /certs says %s", r.Serial, r.Version, served)
				}
			}
		}
	}
	if !found {
		t.Errorf("no stream of the backend Envoy (pid %d) holds %s: %+v", good.Pid(), harness.BackendID, st.SDSStreams)
	}
	var cached bool
	for _, s := range st.SVIDs {
		cached = cached || (s.SPIFFEID == harness.BackendID && s.Serial == served)
	}
	if !cached || len(st.CA.Generations) == 0 || st.CA.Generations[0].State != "active" || st.Policy.Revision == "" {
		t.Errorf("status svids %+v, CA %+v, policy %+v: want the served SVID, an active CA and a revision", st.SVIDs, st.CA, st.Policy)
	}

	// The table, for people.
	out, err := m.CLI(ctx, 0, "status", "-config", m.ConfigPath)
	if err != nil {
		t.Fatalf("meshid status: %v\n%s", err, out)
	}
	t.Logf("meshid status:\n%s", out)
	for _, want := range []string{"SDS streams", harness.BackendID, served, "NACK", nack.LastNACK.Message[:min(20, len(nack.LastNACK.Message))], "CA generations (self-signed)", "active"} {
		if !strings.Contains(out, want) {
			t.Errorf("meshid status does not show %q:\n%s", want, out)
		}
	}

	// Not root: refused, saying why.
	if out, err := m.CLI(ctx, harness.BackendAppUID, "status", "-config", m.ConfigPath); err == nil || !strings.Contains(out, "root") {
		t.Errorf("meshid status as uid %d: %v\n%s\nwant a refusal that says to run it as root", harness.BackendAppUID, err, out)
	}
}
