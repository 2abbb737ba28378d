package ca

import (
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

func TestJWTSVID(t *testing.T) {
	clk := &fakeClock{now: time.Now().Truncate(time.Second)}
	a := open(t, t.TempDir(), clk)
	id := spiffeid.RequireFromString("spiffe://example.org/web")
	svid, err := a.MintJWTSVID(JWTRequest{ID: id, Audience: []string{"api", "db"}, TTL: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != id || !svid.Expiry.Equal(clk.Now().Add(5*time.Minute)) || len(svid.Audience) != 2 {
		t.Fatalf("svid = %+v", svid)
	}

	token := svid.Token
	jws, err := jose.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	kid := jws.Signatures[0].Header.KeyID
	if !a.JWTBundle().HasJWTAuthority(kid) || jws.Signatures[0].Header.Algorithm != "ES256" {
		t.Fatalf("header kid=%q alg=%q; bundle keys %v", kid, jws.Signatures[0].Header.Algorithm, a.JWTBundle().JWTAuthorities())
	}

	got, err := jwtsvid.ParseAndValidate(token, a.JWTBundle(), []string{"db"})
	if err != nil || got.ID != id {
		t.Fatalf("validate against our JWT bundle: %v, %v", got, err)
	}
	if _, err := jwtsvid.ParseAndValidate(token, a.JWTBundle(), []string{"billing"}); err == nil {
		t.Error("a token for other audiences validated")
	}
	other := open(t, t.TempDir(), clk)
	if _, err := jwtsvid.ParseAndValidate(token, other.JWTBundle(), []string{"db"}); err == nil {
		t.Error("a token validated against another trust root's keys")
	}
}

func TestJWTSVIDExpiredIsRejected(t *testing.T) {
	// go-spiffe checks expiry against the real clock: mint in the past.
	clk := &fakeClock{now: time.Now().Add(-time.Hour)}
	a := open(t, t.TempDir(), clk)
	svid, err := a.MintJWTSVID(JWTRequest{ID: spiffeid.RequireFromString("spiffe://example.org/web"), Audience: []string{"api"}, TTL: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Token, a.JWTBundle(), []string{"api"}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired token: err = %v", err)
	}
}

func TestJWTKeysRotateWithTheCA(t *testing.T) {
	clk := &fakeClock{now: time.Now().Truncate(time.Second)}
	t0 := clk.Now()
	a := open(t, t.TempDir(), clk)
	id := spiffeid.RequireFromString("spiffe://example.org/web")
	old, err := a.MintJWTSVID(JWTRequest{ID: id, Audience: []string{"api"}, TTL: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}

	clk.Set(t0.Add(12 * time.Hour))
	if _, err := a.Rotate(); err != nil {
		t.Fatal(err)
	}
	clk.Set(t0.Add(20 * time.Hour))
	fresh, err := a.MintJWTSVID(JWTRequest{ID: id, Audience: []string{"api"}, TTL: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	kidOf := func(s *JWTSVID) string {
		jws, err := jose.ParseSigned(s.Token, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		return jws.Signatures[0].Header.KeyID
	}
	if kidOf(old) == kidOf(fresh) {
		t.Fatal("the JWT signing key did not rotate with the CA")
	}
	for _, k := range []string{kidOf(old), kidOf(fresh)} {
		if !a.JWTBundle().HasJWTAuthority(k) {
			t.Errorf("key %s missing from the JWT bundle while its CA is unexpired", k)
		}
	}
	if _, err := a.MintJWTSVID(JWTRequest{ID: id, TTL: time.Minute}); err == nil {
		t.Error("minted a JWT-SVID without an audience")
	}
}
