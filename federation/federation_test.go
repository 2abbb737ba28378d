package federation

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"

	"github.com/meshid/meshid/test/svidtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var partner = spiffeid.RequireTrustDomainFromString("partner.example")

// fakeCA is a BundleSource whose roots and JWT keys a test changes.
type fakeCA struct {
	mu    sync.Mutex
	td    spiffeid.TrustDomain
	roots []*x509.Certificate
	keys  map[string]any
}

func newFakeCA(t *testing.T, ca *svidtest.CA) *fakeCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &fakeCA{td: ca.TD, roots: []*x509.Certificate{ca.Root}, keys: map[string]any{"k1": key.Public()}}
}

func (f *fakeCA) X509Bundle() *x509bundle.Bundle {
	f.mu.Lock()
	defer f.mu.Unlock()
	return x509bundle.FromX509Authorities(f.td, f.roots)
}

func (f *fakeCA) JWTBundle() *jwtbundle.Bundle {
	f.mu.Lock()
	defer f.mu.Unlock()
	keys := map[string]any{}
	for k, v := range f.keys {
		keys[k] = v
	}
	b := jwtbundle.New(f.td)
	for k, v := range keys {
		_ = b.AddJWTAuthority(k, v)
	}
	return b
}

func (f *fakeCA) addRoot(c *x509.Certificate) {
	f.mu.Lock()
	f.roots = append(f.roots, c)
	f.mu.Unlock()
}

// serve runs e on a loopback port until the test ends and returns its URL.
func serve(t *testing.T, e *Endpoint) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "https://" + lis.Addr().String() + "/bundle"
}

// webEndpoint serves partner.example's bundle with the https_web profile.
func webEndpoint(t *testing.T, src BundleSource, dir string) (url string, roots *x509.CertPool) {
	t.Helper()
	web := svidtest.NewCA(t, "web.test")
	cert, key := web.WebCert(t, dir, "127.0.0.1")
	e, err := NewEndpoint(EndpointOptions{TrustDomain: partner, Source: src, RefreshHint: time.Second,
		CertFile: cert, KeyFile: key, StateFile: filepath.Join(dir, "endpoint.json")})
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(web.Root)
	return serve(t, e), roots
}

func TestEndpointServesNumberedBundleOverWebPKI(t *testing.T) {
	dir := t.TempDir()
	ca := svidtest.NewCA(t, partner.Name())
	src := newFakeCA(t, ca)
	url, roots := webEndpoint(t, src, dir)

	fetch := func() *spiffebundle.Bundle {
		t.Helper()
		f, err := NewFetcher(FetchOptions{TrustDomain: partner, URL: url, WebRoots: roots, StoreFile: filepath.Join(t.TempDir(), "b.json")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.fetchOnce(t.Context()); err != nil {
			t.Fatal(err)
		}
		return f.Current()
	}
	b := fetch()
	if !b.HasX509Authority(ca.Root) || !b.HasJWTAuthority("k1") {
		t.Fatalf("bundle has roots %d, JWT keys %v; want the CA's root and k1", len(b.X509Authorities()), b.JWTAuthorities())
	}
	if seq, ok := b.SequenceNumber(); !ok || seq != 1 {
		t.Errorf("spiffe_sequence = %d (%v), want 1", seq, ok)
	}
	if hint, ok := b.RefreshHint(); !ok || hint != time.Second {
		t.Errorf("spiffe_refresh_hint = %s (%v), want 1s", hint, ok)
	}
	if seq, _ := fetch().SequenceNumber(); seq != 1 {
		t.Errorf("same content fetched again: sequence %d, want still 1", seq)
	}
	src.addRoot(svidtest.NewCA(t, partner.Name()).Root)
	if seq, _ := fetch().SequenceNumber(); seq != 2 {
		t.Errorf("after a new root: sequence %d, want 2", seq)
	}

	// A restarted endpoint goes on from the persisted number.
	e, err := NewEndpoint(EndpointOptions{TrustDomain: partner, Source: src, SVID: ca.Fresh(t), StateFile: filepath.Join(dir, "endpoint.json")})
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.GetBundleForTrustDomain(partner)
	if err != nil {
		t.Fatal(err)
	}
	if seq, _ := again.SequenceNumber(); seq != 2 {
		t.Errorf("after a restart, same content: sequence %d, want 2", seq)
	}
	if info, err := os.Stat(filepath.Join(dir, "endpoint.json")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v %v, want mode 0600", info.Mode(), err)
	}
}

func TestFetcherSPIFFEAuth(t *testing.T) {
	ca := svidtest.NewCA(t, partner.Name())
	src := newFakeCA(t, ca)
	endpointSVID := ca.SVID(t, "/meshid", time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
	e, err := NewEndpoint(EndpointOptions{TrustDomain: partner, Source: src, RefreshHint: time.Minute,
		SVID: staticSVID{endpointSVID}, StateFile: filepath.Join(t.TempDir(), "state.json")})
	if err != nil {
		t.Fatal(err)
	}
	url := serve(t, e)
	bootstrap := spiffebundle.FromX509Authorities(partner, []*x509.Certificate{ca.Root})

	newFetcher := func(id string, store string) *Fetcher {
		t.Helper()
		f, err := NewFetcher(FetchOptions{TrustDomain: partner, URL: url, EndpointID: spiffeid.RequireFromString(id),
			Bootstrap: bootstrap, StoreFile: store}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	store := filepath.Join(t.TempDir(), "partner.json")
	f := newFetcher("spiffe://partner.example/meshid", store)
	if err := f.fetchOnce(t.Context()); err != nil {
		t.Fatalf("fetch with the right endpoint ID: %v", err)
	}
	if !f.Current().HasJWTAuthority("k1") {
		t.Error("fetched bundle lacks the JWT key the bootstrap did not have")
	}

	wrong := newFetcher("spiffe://partner.example/someone-else", filepath.Join(t.TempDir(), "x.json"))
	err = wrong.fetchOnce(t.Context())
	if err == nil || !strings.Contains(err.Error(), "someone-else") {
		t.Errorf("endpoint presenting another ID: %v, want an error naming the expected ID", err)
	}
	if wrong.Current() != bootstrap {
		t.Error("a refused fetch replaced the bundle")
	}

	// Bootstrapped from another CA's roots, the endpoint's SVID does not
	// verify.
	other, err := NewFetcher(FetchOptions{TrustDomain: partner, URL: url, EndpointID: spiffeid.RequireFromString("spiffe://partner.example/meshid"),
		Bootstrap: spiffebundle.FromX509Authorities(partner, []*x509.Certificate{svidtest.NewCA(t, partner.Name()).Root}),
		StoreFile: filepath.Join(t.TempDir(), "y.json")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.fetchOnce(t.Context()); err == nil {
		t.Error("an endpoint whose SVID does not chain to the bootstrap bundle was accepted")
	}

	// Restarted, the fetcher starts from what it stored, without bootstrap.
	restarted, err := NewFetcher(FetchOptions{TrustDomain: partner, URL: url, EndpointID: spiffeid.RequireFromString("spiffe://partner.example/meshid"),
		StoreFile: store}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !restarted.Current().HasJWTAuthority("k1") {
		t.Error("after a restart the stored bundle was not used")
	}
	// Nothing stored and no bootstrap: https_spiffe cannot start.
	_, err = NewFetcher(FetchOptions{TrustDomain: partner, URL: url, EndpointID: spiffeid.RequireFromString("spiffe://partner.example/meshid"),
		StoreFile: filepath.Join(t.TempDir(), "none.json")}, nil)
	if err == nil || !strings.Contains(err.Error(), "bootstrap") {
		t.Errorf("https_spiffe without bootstrap: %v, want an error asking for bundle_file", err)
	}
}

type staticSVID struct{ s *x509svid.SVID }

func (s staticSVID) GetX509SVID() (*x509svid.SVID, error) { return s.s, nil }

// TestBadEndpointsKeepLastGood serves every kind of bad answer and checks
// that each is refused with a precise error, the stored bundle untouched.
func TestBadEndpointsKeepLastGood(t *testing.T) {
	own := svidtest.NewCA(t, "example.org")
	ownSrc := newFakeCA(t, own)
	good := spiffebundle.FromX509Authorities(partner, []*x509.Certificate{svidtest.NewCA(t, partner.Name()).Root})
	goodJSON, err := good.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ownJSON, err := spiffebundle.FromX509Authorities(partner, []*x509.Certificate{own.Root}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	leaf := own.Fresh(t).Certificates[0]
	leafJSON, err := spiffebundle.FromX509Authorities(partner, []*x509.Certificate{leaf}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, body string
		want       string
	}{
		{"malformed JSON", `{"keys": [`, "unable to parse JWKS"},
		{"not a bundle", `{"hello": "world"}`, "no authorities found"},
		{"empty key set", `{"keys": []}`, "no X.509 root and no JWT key"},
		{"our own domain's bundle", string(ownJSON), "this node's own trust domain"},
		{"a leaf as root", string(leafJSON), "not a CA certificate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(c.body)) }))
			defer srv.Close()
			roots := x509.NewCertPool()
			roots.AddCert(srv.Certificate())
			store := filepath.Join(t.TempDir(), "partner.json")
			if err := os.WriteFile(store, goodJSON, 0o644); err != nil {
				t.Fatal(err)
			}
			f, err := NewFetcher(FetchOptions{TrustDomain: partner, URL: srv.URL, WebRoots: roots, StoreFile: store, Own: ownSrc}, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = f.fetchOnce(t.Context())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("fetch = %v, want an error with %q", err, c.want)
			}
			if !f.Current().Equal(good) {
				t.Error("the last good bundle was replaced")
			}
			if data, _ := os.ReadFile(store); string(data) != string(goodJSON) {
				t.Error("the stored bundle was overwritten")
			}
		})
	}

	t.Run("unreachable, counted", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "https://" + lis.Addr().String()
		lis.Close()
		reg := prometheus.NewRegistry()
		m := NewMetrics(reg, []spiffeid.TrustDomain{partner})
		f, err := NewFetcher(FetchOptions{TrustDomain: partner, URL: url, Bootstrap: good,
			StoreFile: filepath.Join(t.TempDir(), "p.json"), Metrics: m}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if n := testutil.ToFloat64(m.failures.WithLabelValues("partner.example")); n != 0 {
			t.Fatalf("failures before any fetch = %v, want a 0 series", n)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error)
		go func() { done <- f.Run(ctx) }()
		deadline := time.Now().Add(10 * time.Second)
		for testutil.ToFloat64(m.failures.WithLabelValues("partner.example")) < 2 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if n := testutil.ToFloat64(m.failures.WithLabelValues("partner.example")); n < 2 {
			t.Errorf("failures = %v, want retries counted", n)
		}
		if !f.Current().Equal(good) {
			t.Error("the bootstrap bundle was dropped")
		}
		if n, err := testutil.GatherAndCount(reg, "meshid_federation_bundle_age_seconds"); err != nil || n != 1 {
			t.Errorf("bundle age series = %d %v, want 1", n, err)
		}
	})
}

// TestFetcherFollowsRefreshHint runs a fetcher against an endpoint whose
// CA gains a root: the fetcher picks it up after the hint and hands it on.
func TestFetcherFollowsRefreshHint(t *testing.T) {
	ca := svidtest.NewCA(t, partner.Name())
	src := newFakeCA(t, ca)
	url, roots := webEndpoint(t, src, t.TempDir())
	updates := make(chan *spiffebundle.Bundle, 10)
	f, err := NewFetcher(FetchOptions{TrustDomain: partner, URL: url, WebRoots: roots, StoreFile: filepath.Join(t.TempDir(), "p.json")},
		func(b *spiffebundle.Bundle) { updates <- b })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	first := next(t, updates)
	if len(first.X509Authorities()) != 1 {
		t.Fatalf("first bundle has %d roots, want 1", len(first.X509Authorities()))
	}
	added := svidtest.NewCA(t, partner.Name()).Root
	src.addRoot(added)
	if b := next(t, updates); !b.HasX509Authority(added) {
		t.Error("the refreshed bundle lacks the new root")
	}
}

func next(t *testing.T, c <-chan *spiffebundle.Bundle) *spiffebundle.Bundle {
	t.Helper()
	select {
	case b := <-c:
		return b
	case <-time.After(20 * time.Second):
		t.Fatal(errors.New("no bundle update within 20s"))
		return nil
	}
}
