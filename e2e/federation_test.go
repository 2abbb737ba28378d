package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshid/meshid/test/harness"
)

// TestALLAcrossTrustDomains: a frontend of trust domain partner.example
// (its own meshid) calls a backend of example.org. Each meshid is given the
// other's root as a federated bundle file, and each entry federates with
// the other domain, so the SDS "ALL" secret (the SPIFFE certificate
// validator) carries both bundles and each Envoy accepts the other's SVID.
func TestALLAcrossTrustDomains(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	const partnerTD = "partner.example"
	policyDir := crossDomainPolicy(t, env)
	backendEntry, frontendEntry := crossDomainEntries()

	// Each side needs the other's root: start ours, then the partner's with
	// our root, then give ours the partner's root and restart it (the CA
	// survives restarts).
	ours, err := env.StartMeshid(ctx, harness.MeshidOptions{Name: "meshid-ours", Entries: []harness.Entry{backendEntry}, PolicyDir: policyDir})
	if err != nil {
		t.Fatal(err)
	}
	federation := func(td string, m *harness.Meshid) string {
		root := activeCAPath(t, m)
		return fmt.Sprintf("federation:\n  bundles:\n    - trust_domain: %s\n      bundle_file: %s\n", td, root)
	}
	frontendEntry.FederatesWith = []string{harness.DemoTrustDomain}
	partner, err := env.StartMeshid(ctx, harness.MeshidOptions{Name: "meshid-partner", TrustDomain: partnerTD,
		Entries: []harness.Entry{frontendEntry}, ExtraConfig: federation(harness.DemoTrustDomain, ours)})
	if err != nil {
		t.Fatal(err)
	}
	appendFile(t, ours.ConfigPath, federation(partnerTD, partner))
	backendEntry.FederatesWith = []string{partnerTD}
	if err := ours.WriteEntries([]harness.Entry{backendEntry}); err != nil {
		t.Fatal(err)
	}
	if err := ours.Restart(ctx); err != nil {
		t.Fatal(err)
	}

	backend, frontend := startCrossDomain(t, ctx, env, env, ours, partner)

	status, body, err := harness.Get(ctx, "http://"+frontend.Sidecar.Outbound.ListenAddr+"/hello")
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET /hello from partner.example to example.org: %d %s %v", status, body, err)
	}
	var seen struct{ Peer string }
	if err := json.Unmarshal(body, &seen); err != nil || seen.Peer != partnerFrontend {
		t.Fatalf("backend saw peer %q (%v), want %s", seen.Peer, err, partnerFrontend)
	}
	if _, roots := envoyCerts(t, ctx, backend); len(roots) != 2 {
		t.Fatalf("the backend Envoy trusts %d roots, want its own and the partner's", len(roots))
	}
	t.Logf("partner.example frontend -> example.org backend over ALL: 200, backend saw %s", seen.Peer)
}

// uids of TestJWTSVIDsAcrossTrustDomains: one whose entry federates with
// partner.example, one whose entry does not.
const (
	federatingUID = 1311
	localUID      = 1312
)

// TestJWTSVIDsAcrossTrustDomains: partner.example hands out only a SPIFFE
// bundle with one JWT key (no X.509 roots). A JWT-SVID it signed is valid,
// through `meshid jwt validate` (the Workload API), for a caller whose
// entry federates with partner.example, invalid for one whose entry does
// not; the first gets the partner's JWT bundle from FetchJWTBundles, and
// authz, which serves the whole node, accepts the token too.
func TestJWTSVIDsAcrossTrustDomains(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	const (
		partnerTD     = "partner.example"
		partnerClient = "spiffe://partner.example/ns/billing/sa/client"
		partnerKID    = "partner-jwt-1"
	)
	partnerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	bundle := spiffebundle.New(spiffeid.RequireTrustDomainFromString(partnerTD))
	if err := bundle.AddJWTAuthority(partnerKID, partnerKey.Public()); err != nil {
		t.Fatal(err)
	}
	doc, err := bundle.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	bundlePath := filepath.Join(env.Dir, "partner.example.json")
	write(t, bundlePath, string(doc))

	policyDir, err := env.MkdirAll("jwt-federation-policy")
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(policyDir, "authz.rego"), `package envoy.authz

default allow := false

allow if {
	input.spiffe.jwt.valid
	input.spiffe.jwt.subject == "`+partnerClient+`"
}
`)
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{
		Entries: []harness.Entry{
			{SPIFFEID: "spiffe://example.org/federating", Selectors: []string{fmt.Sprintf("unix:uid:%d", federatingUID)}, FederatesWith: []string{partnerTD}},
			{SPIFFEID: "spiffe://example.org/local", Selectors: []string{fmt.Sprintf("unix:uid:%d", localUID)}},
		},
		PolicyDir:   policyDir,
		ExtraConfig: fmt.Sprintf("federation:\n  bundles:\n    - trust_domain: %s\n      bundle_file: %s\n", partnerTD, bundlePath),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.ConfigureAuthz(ctx, map[string]any{"jwt_audiences": []string{"backend"}}); err != nil {
		t.Fatal(err)
	}
	if logs := m.Logs(); !strings.Contains(logs, "trust_domain=partner.example x509_roots=0 jwt_keys=1") ||
		!strings.Contains(logs, "JWT-SVIDs of federated trust domains are validated against their JWT keys too") {
		t.Errorf("meshid did not log the partner's bundle (one JWT key, no roots) and its use by authz:\n%s", logs)
	}
	cli := func(uid uint32, args ...string) (string, error) {
		t.Helper()
		return m.CLI(ctx, uid, args...)
	}
	token := mintJWT(t, partnerKey, partnerKID, partnerClient, "backend")

	out, err := cli(federatingUID, "jwt", "validate", "-audience", "backend", token)
	if err != nil || !strings.HasPrefix(out, "valid") || !strings.Contains(out, "SPIFFE ID  "+partnerClient) {
		t.Fatalf("a caller federating with partner.example: jwt validate: %v\n%s", err, out)
	}
	t.Logf("federating caller: jwt validate of the partner's token:\n%s", out)
	out, err = cli(localUID, "jwt", "validate", "-audience", "backend", token)
	if err == nil || !strings.Contains(out, `no bundle found for trust domain "partner.example"`) {
		t.Fatalf("a caller not federating with partner.example: jwt validate: %v\n%s", err, out)
	}
	t.Logf("non-federating caller: jwt validate of the partner's token refused:\n%s", out)
	impostorKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	forged := mintJWT(t, impostorKey, partnerKID, partnerClient, "backend")
	if out, err := cli(federatingUID, "jwt", "validate", "-audience", "backend", forged); err == nil {
		t.Fatalf("a token under the partner's key id but another key validated:\n%s", out)
	}

	// FetchJWTBundles: the partner's JWT key for the federating caller
	// only. Its X.509 side has no partner bundle at all, not an empty one.
	out, err = cli(federatingUID, "bundle", "show", "-format", "jwks", "-trust-domain", partnerTD)
	if err != nil || !strings.Contains(out, `"kid":"`+partnerKID+`"`) || strings.Contains(out, "x509-svid") {
		t.Fatalf("federating caller: bundle show -format jwks -trust-domain %s: %v\n%s", partnerTD, err, out)
	}
	if out, err := cli(localUID, "bundle", "show", "-format", "jwks", "-trust-domain", partnerTD); err == nil {
		t.Fatalf("non-federating caller got the partner's bundle:\n%s", out)
	}
	if out, err := cli(federatingUID, "bundle", "show"); err != nil || strings.Contains(out, partnerTD) {
		t.Fatalf("federating caller's X.509 bundles name the JWT-only partner: %v\n%s", err, out)
	}

	// authz validates against every federated JWT bundle.
	conn, err := grpc.NewClient(m.AuthzAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	check := func(bearer string) int32 {
		t.Helper()
		resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: "/jwt", Headers: map[string]string{"authorization": "Bearer " + bearer},
			}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus().GetCode()
	}
	if code := check(token); code != int32(codes.OK) {
		t.Errorf("authz with the partner's JWT-SVID: status %d, want OK", code)
	}
	if code := check(forged); code != int32(codes.PermissionDenied) {
		t.Errorf("authz with a forged partner JWT-SVID: status %d, want PermissionDenied", code)
	}
}

// activeCAPath is the path of meshid's only CA certificate.
func activeCAPath(t *testing.T, m *harness.Meshid) string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(m.Dir, "data", "ca", "*", "ca.crt"))
	if err != nil || len(paths) != 1 {
		t.Fatalf("meshid's CA generations: %v %v, want exactly one", paths, err)
	}
	return paths[0]
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}
