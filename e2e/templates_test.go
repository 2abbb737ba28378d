package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

// TestEntryTemplate: one template entry gives two Envoys under two uids
// two identities, each the one its own uid makes, served by SDS under its
// own name; an Envoy asking for the other's templated ID gets nothing;
// `meshid entry explain` shows the ID a process gets from the template.
func TestEntryTemplate(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	td := harness.DemoTrustDomain
	const template = "spiffe://" + harness.DemoTrustDomain + "/uid/{unix:uid}"
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: []harness.Entry{{Template: template}}})
	if err != nil {
		t.Fatal(err)
	}
	sidecar := func(id string) envoy.Sidecar {
		return envoy.Sidecar{SDSSocket: m.SocketPath, SPIFFEID: id, TrustDomain: td,
			Inbound: &envoy.Inbound{ListenAddr: env.FreeAddr(), AppAddr: env.FreeAddr(), AuthzAddr: m.AuthzAddr}}
	}
	const uidA, uidB, uidThief = 1321, 1322, 1323
	idOf := func(uid int) string { return fmt.Sprintf("spiffe://%s/uid/%d", td, uid) }

	var envoys []*harness.Envoy
	for _, uid := range []int{uidA, uidB} {
		v, err := env.StartEnvoy(ctx, fmt.Sprintf("envoy-%d", uid), sidecar(idOf(uid)), uint32(uid))
		if err != nil {
			t.Fatal(err)
		}
		envoys = append(envoys, v)
	}
	for i, v := range envoys {
		if err := v.WaitLive(ctx); err != nil {
			t.Fatal(err)
		}
		uid := []int{uidA, uidB}[i]
		own, _ := envoyCertURIs(t, ctx, v)
		if !slices.Equal(own, []string{idOf(uid)}) {
			t.Fatalf("Envoy of uid %d holds %v, want only %s", uid, own, idOf(uid))
		}
		chain := presentedChain(t, v.Sidecar.Inbound.ListenAddr)
		if len(chain) == 0 || len(chain[0].URIs) != 1 || chain[0].URIs[0].String() != idOf(uid) {
			t.Fatalf("Envoy of uid %d presents %v", uid, chain)
		}
		t.Logf("uid %d: %s", uid, own[0])
	}

	out := explain(t, env, m, envoys[0].Pid())
	if want := fmt.Sprintf("match     %s (%s:2) from template %s", idOf(uidA), m.EntriesPath, template); !strings.Contains(out, want) {
		t.Errorf("explain lacks %q:\n%s", want, out)
	}
	t.Logf("meshid entry explain -pid %d:\n%s", envoys[0].Pid(), out)

	// The thief's own uid makes another ID: it may not have uid 1321's.
	thief, err := env.StartEnvoy(ctx, "thief", sidecar(idOf(uidA)), uidThief)
	if err != nil {
		t.Fatal(err)
	}
	// Envoy logs the refusal of its SDS stream: asked for, and refused.
	waitFor(t, ctx, "the thief's Envoy to be refused uid 1321's ID", func() bool {
		return strings.Contains(thief.Logs(), "not an identity or trust domain this caller is entitled to")
	})
	if own, _ := envoyCertURIs(t, ctx, thief); len(own) != 0 {
		t.Fatalf("the thief holds %v", own)
	}
	if status, _, err := harness.Get(ctx, thief.AdminURL+"/ready"); err != nil || status == 200 {
		t.Fatalf("the thief's Envoy is ready (%d, %v): it was served %s", status, err, idOf(uidA))
	}
	t.Logf("thief: %s", logLine(thief.Logs(), "entitled"))
}
