package input_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/authz/input"
)

// spiffeDoc returns input.spiffe as a policy sees it, as JSON.
func spiffeDoc(t *testing.T, b *input.Builder, req *authv3.CheckRequest) map[string]any {
	t.Helper()
	in, err := b.Build(context.Background(), req, time.Time{})
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	v, err := in.(ast.Object).Find(ast.MustParseRef("x.spiffe")[1:])
	if err != nil {
		t.Fatalf("no input.spiffe: %v", err)
	}
	doc, err := ast.JSON(v)
	if err != nil {
		t.Fatal(err)
	}
	return doc.(map[string]any)
}

func TestXFCCSource(t *testing.T) {
	const gateway = "spiffe://example.org/ns/edge/sa/gateway"
	xfcc := "By=" + gateway + ";Hash=ab;URI=" + frontend
	tests := []struct {
		name    string
		opts    input.Options
		peer    string
		header  string
		want    string // input.spiffe.source.id, "" for absent
		wantVia string
	}{
		{"not trusted: mTLS peer", input.Options{}, gateway, xfcc, gateway, "mtls"},
		{"trusted from anyone", input.Options{TrustXFCC: true}, "", xfcc, frontend, "xfcc"},
		{"trusted from the gateway", input.Options{TrustXFCC: true, XFCCProxies: []string{gateway}}, gateway, xfcc, frontend, "xfcc"},
		{"forwarded by another peer", input.Options{TrustXFCC: true, XFCCProxies: []string{gateway}}, backend, xfcc, backend, "mtls"},
		{"trusted but unusable", input.Options{TrustXFCC: true}, gateway, "URI=not a spiffe id", "", ""},
		{"trusted but malformed", input.Options{TrustXFCC: true}, gateway, `URI="x`, "", ""},
		{"trusted, no header", input.Options{TrustXFCC: true}, gateway, "", gateway, "mtls"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := checkRequest(tt.peer, backend, "GET", "/hello")
			if tt.header != "" {
				req.Attributes.Request.Http.Headers["x-forwarded-client-cert"] = tt.header
			}
			doc := spiffeDoc(t, newBuilder(t, tt.opts), req)
			src, _ := doc["source"].(map[string]any)
			if tt.want == "" {
				if src != nil {
					t.Fatalf("input.spiffe.source = %v, want absent", src)
				}
				return
			}
			if src["id"] != tt.want || src["via"] != tt.wantVia || src["trust_domain"] != "example.org" {
				t.Fatalf("input.spiffe.source = %v, want id %s via %s", src, tt.want, tt.wantVia)
			}
			if doc["destination"].(map[string]any)["id"] != backend {
				t.Errorf("input.spiffe.destination = %v", doc["destination"])
			}
		})
	}
}

// jwtIssuer signs JWT-SVIDs the way meshid's CA does: ES256 with a kid.
type jwtIssuer struct {
	key    *ecdsa.PrivateKey
	kid    string
	bundle *jwtbundle.Bundle
}

func newJWTIssuer(t *testing.T, td, kid string) *jwtIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tdID := spiffeid.RequireTrustDomainFromString(td)
	return &jwtIssuer{key: key, kid: kid, bundle: jwtbundle.FromJWTAuthorities(tdID, map[string]crypto.PublicKey{kid: key.Public()})}
}

func (i *jwtIssuer) mint(t *testing.T, sub string, aud []string, exp time.Time, extra map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: i.key, KeyID: i.kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: sub, Audience: aud, Expiry: jwt.NewNumericDate(exp), IssuedAt: jwt.NewNumericDate(time.Now())}).Claims(extra).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestJWTSVID(t *testing.T) {
	issuer := newJWTIssuer(t, "example.org", "k1")
	other := newJWTIssuer(t, "example.org", "k2") // same trust domain, key not in the bundle
	hour := time.Now().Add(time.Hour)
	valid := issuer.mint(t, frontend, []string{"backend", "x"}, hour, map[string]any{"n": uint64(12345678901234567890)})
	tests := []struct {
		name   string
		header string
		want   map[string]any // nil: input.spiffe.jwt absent
		errHas string         // for invalid tokens
	}{
		{"no header", "", nil, ""},
		{"basic auth", "Basic YWRhOnB3", nil, ""},
		{"opaque bearer", "Bearer abc123", nil, ""},
		{"valid", "Bearer " + valid, map[string]any{"valid": true, "subject": frontend, "audience": []any{"backend", "x"}}, ""},
		{"lower-case scheme", "bearer " + valid, map[string]any{"valid": true, "subject": frontend, "audience": []any{"backend", "x"}}, ""},
		{"wrong audience", "Bearer " + issuer.mint(t, frontend, []string{"db"}, hour, nil), map[string]any{"valid": false}, "expected audience"},
		{"expired", "Bearer " + issuer.mint(t, frontend, []string{"backend"}, time.Now().Add(-time.Minute), nil), map[string]any{"valid": false}, "token has expired"},
		{"unknown key", "Bearer " + other.mint(t, frontend, []string{"backend"}, hour, nil), map[string]any{"valid": false}, `no JWT authority "k2"`},
		{"foreign trust domain", "Bearer " + issuer.mint(t, "spiffe://evil.example/x", []string{"backend"}, hour, nil), map[string]any{"valid": false}, "no bundle found"},
		{"garbage", "Bearer a.b.c", map[string]any{"valid": false}, "unable to parse JWT token"},
	}
	b := newBuilder(t, input.Options{JWTAudiences: []string{"backend"}, JWTBundles: issuer.bundle})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := checkRequest(frontend, backend, "GET", "/hello")
			if tt.header != "" {
				req.Attributes.Request.Http.Headers["authorization"] = tt.header
			}
			for range 2 { // the second time from the cache of valid tokens
				got, _ := spiffeDoc(t, b, req)["jwt"].(map[string]any)
				if tt.want == nil {
					if got != nil {
						t.Fatalf("input.spiffe.jwt = %v, want absent", got)
					}
					continue
				}
				for k, v := range tt.want {
					gj, _ := json.Marshal(got[k])
					wj, _ := json.Marshal(v)
					if string(gj) != string(wj) {
						t.Fatalf("input.spiffe.jwt.%s = %s, want %s (jwt: %v)", k, gj, wj, got)
					}
				}
				if tt.errHas != "" && !strings.Contains(got["error"].(string), tt.errHas) {
					t.Fatalf("input.spiffe.jwt.error = %q, want it to say %q", got["error"], tt.errHas)
				}
				if got["valid"] == true {
					claims := got["claims"].(map[string]any)
					if claims["sub"] != frontend || claims["n"] != json.Number("12345678901234567890") {
						t.Fatalf("claims = %v: want sub and the exact large number", claims)
					}
				}
			}
		})
	}
}

func TestJWTNeedsBundles(t *testing.T) {
	if _, err := input.NewBuilder(input.Options{JWTAudiences: []string{"x"}}); err == nil {
		t.Error("NewBuilder accepted JWT audiences without bundles")
	}
}
