package svidtest_test

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/goleak"

	"github.com/meshid/meshid/test/svidtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCA: leaves chain to the root, carry their SPIFFE ID and validity,
// and never share a serial.
func TestCA(t *testing.T) {
	ca := svidtest.NewCA(t, "example.org")
	nb := time.Now().Add(-time.Minute).Truncate(time.Second)
	a := ca.SVID(t, "/a", nb, nb.Add(time.Hour))
	b := ca.Fresh(t)
	for _, s := range []*x509svid.SVID{a, b} {
		id, chains, err := x509svid.Verify(s.Certificates, ca.Bundles())
		if err != nil || len(chains) != 1 || id != s.ID {
			t.Fatalf("%s does not verify against the CA's bundle: %v", s.ID, err)
		}
	}
	if a.ID.String() != "spiffe://example.org/a" || !a.Certificates[0].NotBefore.Equal(nb) || !a.Certificates[0].NotAfter.Equal(nb.Add(time.Hour)) {
		t.Errorf("SVID %s, %v to %v", a.ID, a.Certificates[0].NotBefore, a.Certificates[0].NotAfter)
	}
	if b.ID.String() != "spiffe://example.org/app" || time.Until(b.Certificates[0].NotAfter) < 59*time.Minute {
		t.Errorf("Fresh: %s until %v", b.ID, b.Certificates[0].NotAfter)
	}
	if a.Certificates[0].SerialNumber.Cmp(b.Certificates[0].SerialNumber) == 0 {
		t.Error("two leaves share a serial")
	}
	if c := ca.X509Context(a, b); len(c.SVIDs) != 2 || c.DefaultSVID() != a {
		t.Errorf("X509Context: %+v", c)
	}
}

// TestServeWorkloadAPI: go-spiffe's client gets the SVID, the bundles and
// a JWT-SVID the server then validates.
func TestServeWorkloadAPI(t *testing.T) {
	ca := svidtest.NewCA(t, "example.org")
	s := ca.Fresh(t)
	sock := svidtest.ServeWorkloadAPI(t, ca, s)
	c, err := workloadapi.New(t.Context(), workloadapi.WithAddr("unix://"+sock))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	x509ctx, err := c.FetchX509Context(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := x509ctx.DefaultSVID(); got.ID != s.ID || !got.Certificates[0].Equal(s.Certificates[0]) {
		t.Fatalf("fetched %s, want %s", got.ID, s.ID)
	}
	jwtBundles, err := c.FetchJWTBundles(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := jwtBundles.Get(ca.TD); !ok || !b.HasJWTAuthority(svidtest.JWTKeyID) {
		t.Fatalf("JWT bundles %v lack key %s of %s", jwtBundles.Bundles(), svidtest.JWTKeyID, ca.TD)
	}
	token, err := c.FetchJWTSVID(t.Context(), jwtsvid.Params{Audience: "payments"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(token.Marshal(), jwtBundles, []string{"payments"}); err != nil {
		t.Fatalf("the token does not validate against the bundle given: %v", err)
	}
	if got, err := c.ValidateJWTSVID(t.Context(), token.Marshal(), "payments"); err != nil || got.ID != s.ID {
		t.Fatalf("ValidateJWTSVID = %v, %v", got, err)
	}
	if _, err := c.ValidateJWTSVID(t.Context(), token.Marshal(), "other"); err == nil {
		t.Fatal("a token for another audience validated")
	}
}
