package workload

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/test/grpctest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	td    = spiffeid.RequireTrustDomainFromString("example.org")
	webID = spiffeid.RequireFromString("spiffe://example.org/web")
)

// fake is one caller's identities, controllable by the test.
type fake struct {
	mu      sync.Mutex
	x       *workloadapi.X509Context
	err     error // of Current and JWTSVIDs, when set
	jwtKey  *ecdsa.PrivateKey
	changed chan struct{}
	exited  chan struct{} // closed by the test as the caller's exit
	// building, when set, holds Current up: it sends on it, then waits to
	// receive, so a test can act while a response is being built.
	building chan struct{}
	// federated, when set, is another trust domain's JWT bundle the caller
	// is granted (its entries federate with it).
	federated *jwtbundle.Bundle
	who       []credentials.AuthInfo // of every Watch
}

func (f *fake) Watch(_ context.Context, who credentials.AuthInfo) (Subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.who = append(f.who, who)
	return f, nil
}

func (f *fake) Changed() <-chan struct{} { return f.changed }
func (f *fake) Exited() <-chan struct{}  { return f.exited }
func (f *fake) Close()                   {}
func (f *fake) Current() (*workloadapi.X509Context, error) {
	f.mu.Lock()
	x, err, building := f.x, f.err, f.building
	f.mu.Unlock()
	if building != nil {
		building <- struct{}{}
		<-building
	}
	return x, err
}

func (f *fake) JWTBundles() *jwtbundle.Set {
	set := jwtbundle.NewSet(jwtbundle.FromJWTAuthorities(td, map[string]crypto.PublicKey{"k1": f.jwtKey.Public()}))
	if f.federated != nil {
		set.Add(f.federated)
	}
	return set
}

func (f *fake) JWTSVIDs(audience []string) ([]JWTSVID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	var out []JWTSVID
	for _, svid := range f.x.SVIDs {
		out = append(out, JWTSVID{ID: svid.ID, Token: f.sign(svid.ID.String(), audience, time.Now().Add(time.Minute))})
	}
	return out, nil
}

func (f *fake) sign(sub string, aud []string, exp time.Time) string {
	return signJWT(f.jwtKey, "k1", sub, aud, exp)
}

func signJWT(key *ecdsa.PrivateKey, kid, sub string, aud []string, exp time.Time) string {
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	token, _ := jwt.Signed(signer).Claims(jwt.Claims{Subject: sub, Audience: aud, Expiry: jwt.NewNumericDate(exp), IssuedAt: jwt.NewNumericDate(time.Now())}).Serialize()
	return token
}

func newFake(t testing.TB, ids ...spiffeid.ID) *fake {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), IsCA: true, BasicConstraintsValid: true, URIs: []*url.URL{td.ID().URL()},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, caKey.Public(), caKey)
	caCert, _ := x509.ParseCertificate(der)
	f := &fake{changed: make(chan struct{}, 1), exited: make(chan struct{})}
	f.jwtKey, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	f.x = &workloadapi.X509Context{Bundles: x509bundle.NewSet(x509bundle.FromX509Authorities(td, []*x509.Certificate{caCert}))}
	for i, id := range ids {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), URIs: []*url.URL{id.URL()},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
		leafDER, _ := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, key.Public(), caKey)
		leaf, _ := x509.ParseCertificate(leafDER)
		f.x.SVIDs = append(f.x.SVIDs, &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key})
	}
	return f
}

func client(t *testing.T, f *fake, opts ...grpc.ServerOption) (workloadpb.SpiffeWorkloadAPIClient, context.Context) {
	t.Helper()
	conn := grpctest.Serve(t, "unix", func(s *grpc.Server) { New(Options{Identities: f}).Register(s) }, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return workloadpb.NewSpiffeWorkloadAPIClient(conn), metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
}

func TestFetchX509SVIDStreamsOnlyChanges(t *testing.T) {
	f := newFake(t, webID)
	c, ctx := client(t, f)
	stream, err := c.FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	got := first.Svids[0]
	svid, err := x509svid.ParseRaw(got.X509Svid, got.X509SvidKey)
	if err != nil || svid.ID != webID || len(got.Bundle) == 0 {
		t.Fatalf("svid = %v (%v), bundle %d bytes", svid, err, len(got.Bundle))
	}
	f.changed <- struct{}{} // nothing actually changed: nothing is sent
	f.mu.Lock()
	f.x = newFake(t, webID).x
	f.mu.Unlock()
	f.changed <- struct{}{}
	second, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if string(second.Svids[0].X509Svid) == string(first.Svids[0].X509Svid) {
		t.Fatal("a signal without a change was sent as an update")
	}
}

func TestRefusals(t *testing.T) {
	noHeader := func(ctx context.Context) context.Context { return context.Background() }
	same := func(ctx context.Context) context.Context { return ctx }
	tests := []struct {
		name string
		ids  []spiffeid.ID
		ctx  func(context.Context) context.Context
		call func(context.Context, workloadpb.SpiffeWorkloadAPIClient) error
		code codes.Code
		want string
	}{
		{"missing header", []spiffeid.ID{webID}, noHeader, fetchX509, codes.InvalidArgument, "workload.spiffe.io"},
		{"no identity", nil, same, fetchX509, codes.PermissionDenied, "no identity issued"},
		{"no identity, bundles", nil, same, func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) error {
			s, err := c.FetchX509Bundles(ctx, &workloadpb.X509BundlesRequest{})
			if err == nil {
				_, err = s.Recv()
			}
			return err
		}, codes.PermissionDenied, "no identity issued"},
		{"JWT without audience", []spiffeid.ID{webID}, same, func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) error {
			_, err := c.FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{})
			return err
		}, codes.InvalidArgument, "audience"},
		{"JWT for an identity not held", []spiffeid.ID{webID}, same, func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) error {
			_, err := c.FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"a"}, SpiffeId: "spiffe://example.org/db"})
			return err
		}, codes.PermissionDenied, "spiffe://example.org/db"},
		{"validate without token", []spiffeid.ID{webID}, same, func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) error {
			_, err := c.ValidateJWTSVID(ctx, &workloadpb.ValidateJWTSVIDRequest{Audience: "a"})
			return err
		}, codes.InvalidArgument, "svid must be specified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ctx := client(t, newFake(t, tt.ids...))
			err := tt.call(tt.ctx(ctx), c)
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %v mentioning %q", err, tt.code, tt.want)
			}
		})
	}
}

func fetchX509(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) error {
	s, err := c.FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
	if err == nil {
		_, err = s.Recv()
	}
	return err
}

func TestValidateJWTSVID(t *testing.T) {
	f := newFake(t, webID)
	c, ctx := client(t, f)
	good := f.sign(webID.String(), []string{"api"}, time.Now().Add(time.Minute))
	resp, err := c.ValidateJWTSVID(ctx, &workloadpb.ValidateJWTSVIDRequest{Audience: "api", Svid: good})
	if err != nil || resp.SpiffeId != webID.String() || resp.Claims.Fields["sub"].GetStringValue() != webID.String() {
		t.Fatalf("valid token: %v, %v", resp, err)
	}
	forger := newFake(t, webID) // same kid, another key
	for name, token := range map[string]string{
		"wrong audience": good,
		"expired":        f.sign(webID.String(), []string{"billing"}, time.Now().Add(-time.Minute)),
		"forged":         forger.sign(webID.String(), []string{"billing"}, time.Now().Add(time.Minute)),
		"malformed":      "not.a.jwt",
	} {
		if _, err := c.ValidateJWTSVID(ctx, &workloadpb.ValidateJWTSVIDRequest{Audience: "billing", Svid: token}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s token: err = %v, want InvalidArgument", name, err)
		}
	}
}

// A federated trust domain's JWT keys reach a caller granted them, in
// FetchJWTBundles and in ValidateJWTSVID alike, and only such a caller.
func TestFederatedJWTBundles(t *testing.T) {
	partner := spiffeid.RequireTrustDomainFromString("partner.example")
	partnerKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	partnerBundle := jwtbundle.FromJWTAuthorities(partner, map[string]crypto.PublicKey{"p1": partnerKey.Public()})
	token := signJWT(partnerKey, "p1", "spiffe://partner.example/client", []string{"api"}, time.Now().Add(time.Minute))
	for _, granted := range []bool{true, false} {
		f := newFake(t, webID)
		if granted {
			f.federated = partnerBundle
		}
		c, ctx := client(t, f)

		stream, err := c.FetchJWTBundles(ctx, &workloadpb.JWTBundlesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		jwks, got := resp.Bundles[partner.IDString()]
		if _, own := resp.Bundles[td.IDString()]; !own || got != granted || len(resp.Bundles) != map[bool]int{true: 2, false: 1}[granted] {
			t.Errorf("granted %v: FetchJWTBundles sent %d bundles, partner's: %v, own: %v", granted, len(resp.Bundles), got, own)
		}
		if got {
			b, err := jwtbundle.Parse(partner, jwks)
			if err != nil || !b.HasJWTAuthority("p1") {
				t.Errorf("partner JWKS %s: %v", jwks, err)
			}
		}

		v, err := c.ValidateJWTSVID(ctx, &workloadpb.ValidateJWTSVIDRequest{Audience: "api", Svid: token})
		switch {
		case granted && (err != nil || v.SpiffeId != "spiffe://partner.example/client"):
			t.Errorf("a caller federating with partner.example: validate its JWT-SVID: %v, %v", v, err)
		case !granted && status.Code(err) != codes.InvalidArgument:
			t.Errorf("a caller not federating with partner.example: validate its JWT-SVID: %v, %v; want InvalidArgument", v, err)
		}
	}
}

// FuzzValidateJWTSVID: whatever the token and audience, validation answers
// with a result or InvalidArgument, never anything else.
func FuzzValidateJWTSVID(f *testing.F) {
	fk := newFake(f, webID)
	f.Add(fk.sign(webID.String(), []string{"api"}, time.Now().Add(time.Hour)), "api")
	f.Add("eyJhbGciOiJub25lIn0.e30.", "api")
	f.Add("a.b.c", "")
	srv := New(Options{Identities: fk})
	ctx := metadata.NewIncomingContext(withPeer(context.Background()), metadata.Pairs("workload.spiffe.io", "true"))
	f.Fuzz(func(t *testing.T, token, audience string) {
		_, err := srv.ValidateJWTSVID(ctx, &workloadpb.ValidateJWTSVIDRequest{Audience: audience, Svid: token})
		if code := status.Code(err); code != codes.OK && code != codes.InvalidArgument {
			t.Fatalf("token %q audience %q: %v", token, audience, err)
		}
	})
}

// withPeer is ctx as gRPC hands it to a handler: with the caller's peer.
func withPeer(ctx context.Context) context.Context {
	return peer.NewContext(ctx, &peer.Peer{Addr: &net.UnixAddr{Name: "@", Net: "unix"}})
}

// The caller is whoever the transport credentials recorded for the
// connection: workload hands that over, on every call.
func TestTheConnectionsAuthInfoIsWhoIsWatched(t *testing.T) {
	f := newFake(t, webID)
	c, ctx := client(t, f, grpc.Creds(insecure.NewCredentials()))
	if err := fetchX509(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := c.FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"api"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ValidateJWTSVID(ctx, &workloadpb.ValidateJWTSVIDRequest{Audience: "api", Svid: f.sign(webID.String(), []string{"api"}, time.Now().Add(time.Minute))}); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.who) != 3 {
		t.Fatalf("%d Watch calls, want one per call", len(f.who))
	}
	for i, who := range f.who {
		if who == nil || who.AuthType() != "insecure" {
			t.Errorf("call %d: Watch got %v, want the connection's AuthInfo", i, who)
		}
	}
}

func TestACallWithoutAPeerIsRefused(t *testing.T) {
	f := newFake(t, webID)
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("workload.spiffe.io", "true"))
	_, err := New(Options{Identities: f}).FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"api"}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "the call has no gRPC peer") {
		t.Fatalf("err = %v, want PermissionDenied saying there is no peer", err)
	}
	if len(f.who) != 0 {
		t.Error("Watch was asked about a call without a peer")
	}
}

// When the CA can sign nothing, the workload hears why, as Unavailable
// (retry), for X.509 and JWT alike.
func TestCAFailureReachesTheWorkload(t *testing.T) {
	const why = "no valid CA generation: generation 3 expired at 2026-11-23T12:00:00Z; rotation failing since 2026-11-22T12:00:00Z: disk full"
	f := newFake(t, webID)
	c, ctx := client(t, f)
	if err := fetchX509(ctx, c); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.err = fmt.Errorf("issue %s: %w", webID, errors.New(why))
	f.mu.Unlock()
	_, jwtErr := c.FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"api"}})
	for call, err := range map[string]error{"FetchX509SVID": fetchX509(ctx, c), "FetchJWTSVID": jwtErr} {
		if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), why) {
			t.Errorf("%s: err = %v, want Unavailable saying %q", call, err, why)
		}
	}
}
