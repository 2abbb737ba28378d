package helper

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
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
)

// testCA mints X509-SVIDs: a self-signed root and leaves with a chosen
// validity.
type testCA struct {
	td     spiffeid.TrustDomain
	root   *x509.Certificate
	key    *ecdsa.PrivateKey
	serial int64
}

func newTestCA(t *testing.T, td string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"meshid test"}, CommonName: "root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{td: spiffeid.RequireTrustDomainFromString(td), root: root, key: key, serial: 100}
}

func (ca *testCA) svid(t *testing.T, path string, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(ca.td, path)
	u, _ := url.Parse(id.String())
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

// fresh is an SVID valid for an hour from now.
func (ca *testCA) fresh(t *testing.T) *x509svid.SVID {
	return ca.svid(t, "/app", time.Now().Add(-10*time.Second), time.Now().Add(time.Hour))
}

func (ca *testCA) bundles() *x509bundle.Set {
	return x509bundle.NewSet(x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.root}))
}

func (ca *testCA) context(svids ...*x509svid.SVID) *workloadapi.X509Context {
	return &workloadapi.X509Context{SVIDs: svids, Bundles: ca.bundles()}
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

// syncBuffer is a bytes.Buffer for a writer and a reader in different
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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
