package helper

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/test/svidtest"
)

// testCA is svidtest's CA under the names helper's tests use.
type testCA struct {
	*svidtest.CA
	td   spiffeid.TrustDomain
	root *x509.Certificate
}

func newTestCA(t *testing.T, td string) *testCA {
	t.Helper()
	ca := svidtest.NewCA(t, td)
	return &testCA{CA: ca, td: ca.TD, root: ca.Root}
}

func (ca *testCA) svid(t *testing.T, path string, notBefore, notAfter time.Time) *x509svid.SVID {
	return ca.SVID(t, path, notBefore, notAfter)
}

// fresh is an SVID valid for an hour from now.
func (ca *testCA) fresh(t *testing.T) *x509svid.SVID { return ca.Fresh(t) }

func (ca *testCA) bundles() *x509bundle.Set { return ca.Bundles() }

func (ca *testCA) context(svids ...*x509svid.SVID) *workloadapi.X509Context {
	return ca.X509Context(svids...)
}

// testJWT signs a JWT-SVID for aud that expires after ttl.
func testJWT(t *testing.T, sub, aud string, ttl time.Duration) *jwtsvid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	token, err := josejwt.Signed(signer).Claims(josejwt.Claims{
		Subject: sub, Audience: josejwt.Audience{aud},
		Expiry: josejwt.NewNumericDate(time.Now().Add(ttl)), IssuedAt: josejwt.NewNumericDate(time.Now()),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwtsvid.ParseInsecure(token, []string{aud})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fakeSource plays meshid's Workload API stream: what a test sends on
// updates or errs reaches the helper as go-spiffe would deliver it.
type fakeSource struct {
	updates chan *workloadapi.X509Context
	errs    chan error
	mu      sync.Mutex
	jwt     func() (*jwtsvid.SVID, error) // nil: Unimplemented
	fetches int
}

func newFakeSource() *fakeSource {
	return &fakeSource{updates: make(chan *workloadapi.X509Context), errs: make(chan error)}
}

func (f *fakeSource) WatchX509Context(ctx context.Context, w workloadapi.X509ContextWatcher) error {
	for {
		select {
		case <-ctx.Done():
			w.OnX509ContextWatchError(status.Error(codes.Canceled, "context canceled"))
			return ctx.Err()
		case u := <-f.updates:
			w.OnX509ContextUpdate(u)
		case err := <-f.errs:
			w.OnX509ContextWatchError(err)
		}
	}
}

func (f *fakeSource) FetchJWTSVID(context.Context, jwtsvid.Params) (*jwtsvid.SVID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	if f.jwt == nil {
		return nil, status.Error(codes.Unimplemented, "not in this test")
	}
	return f.jwt()
}

func (f *fakeSource) jwtFetches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// assertOnlyFiles fails unless dir holds exactly want (sorted): no
// temporary file left behind.
func assertOnlyFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("%s holds %v, want %v", dir, got, want)
	}
}

func onDisk(t *testing.T, dir string) *x509svid.SVID {
	t.Helper()
	s, err := x509svid.Load(filepath.Join(dir, DefaultCertFile), filepath.Join(dir, DefaultKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
