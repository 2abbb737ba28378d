package sds

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshid/meshid/test/grpctest"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	grpcstatus "google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	frontendID = "spiffe://example.org/frontend"
	trustID    = "spiffe://example.org"
)

// fakeIdentities hands every caller the same controllable subscription.
type fakeIdentities struct {
	sub      *fakeSub
	watchErr error

	mu  sync.Mutex
	who []credentials.AuthInfo // of every Watch
}

func (f *fakeIdentities) Watch(_ context.Context, who credentials.AuthInfo) (Subscription, error) {
	f.mu.Lock()
	f.who = append(f.who, who)
	f.mu.Unlock()
	if f.watchErr != nil {
		return nil, f.watchErr
	}
	return f.sub, nil
}

type fakeSub struct {
	ca      *testCA
	mu      sync.Mutex
	x       *workloadapi.X509Context
	err     error // of Current, when set
	changed chan struct{}
	exited  chan struct{} // closed by the test as the caller's exit
	// building, when set, holds Current up: it sends on it, then waits to
	// receive, so a test can act while a response is being built.
	building chan struct{}
}

func (f *fakeSub) Changed() <-chan struct{} { return f.changed }
func (f *fakeSub) Exited() <-chan struct{}  { return f.exited }
func (f *fakeSub) Close()                   {}
func (f *fakeSub) Current() (*workloadapi.X509Context, error) {
	f.mu.Lock()
	x, err, building := f.x, f.err, f.building
	f.mu.Unlock()
	if building != nil {
		building <- struct{}{}
		<-building
	}
	if err != nil {
		return nil, err
	}
	return x, nil
}

// set replaces what the caller is entitled to and signals the change.
func (f *fakeSub) set(x *workloadapi.X509Context) {
	f.mu.Lock()
	f.x = x
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// rotate re-issues the caller's SVID under the same CA.
func (f *fakeSub) rotate(t *testing.T) { f.set(f.ca.context(t, frontendID)) }

// testCA issues SVIDs under one root, as meshid's CA would.
type testCA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, URIs: []*url.URL{td.ID().URL()}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{td: td, cert: cert, key: key}
}

// context returns the X509 context of a caller entitled to ids.
func (c *testCA) context(t testing.TB, ids ...string) *workloadapi.X509Context {
	t.Helper()
	x := &workloadapi.X509Context{Bundles: x509bundle.NewSet(x509bundle.FromX509Authorities(c.td, []*x509.Certificate{c.cert}))}
	for _, id := range ids {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl := &x509.Certificate{SerialNumber: serial, URIs: []*url.URL{spiffeid.RequireFromString(id).URL()},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, key.Public(), c.key)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := x509.ParseCertificate(der)
		x.SVIDs = append(x.SVIDs, &x509svid.SVID{ID: spiffeid.RequireFromString(id), Certificates: []*x509.Certificate{leaf}, PrivateKey: key})
	}
	return x
}

// startServer serves SDS on a real Unix socket and returns a client.
func startServer(t *testing.T, ids Identities) secretv3.SecretDiscoveryServiceClient {
	t.Helper()
	return startServerWith(t, Options{Identities: ids})
}

func startServerWith(t *testing.T, o Options) secretv3.SecretDiscoveryServiceClient {
	t.Helper()
	conn := grpctest.Serve(t, "unix", func(s *grpc.Server) { New(o).Register(s) })
	return secretv3.NewSecretDiscoveryServiceClient(conn)
}

// envoy is a scripted SDS client on one stream.
type envoy struct {
	t      *testing.T
	stream secretv3.SecretDiscoveryService_StreamSecretsClient
	last   *discoveryv3.DiscoveryResponse
}

func openStream(t *testing.T, c secretv3.SecretDiscoveryServiceClient) *envoy {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	stream, err := c.StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &envoy{t: t, stream: stream}
}

func (e *envoy) send(req *discoveryv3.DiscoveryRequest) {
	e.t.Helper()
	if req.TypeUrl == "" {
		req.TypeUrl = secretType
	}
	req.Node = &corev3.Node{Id: "test"}
	// io.EOF means the server has already ended the stream; as gRPC
	// documents, the reason is what the next Recv returns.
	if err := e.stream.Send(req); err != nil && err != io.EOF {
		e.t.Fatal(err)
	}
}

// ask requests names, acknowledging the last response if there was one.
func (e *envoy) ask(names ...string) {
	e.t.Helper()
	req := &discoveryv3.DiscoveryRequest{ResourceNames: names}
	if e.last != nil {
		req.VersionInfo, req.ResponseNonce = e.last.VersionInfo, e.last.Nonce
	}
	e.send(req)
}

func (e *envoy) recv() *discoveryv3.DiscoveryResponse {
	e.t.Helper()
	resp, err := e.stream.Recv()
	if err != nil {
		e.t.Fatalf("Recv: %v", err)
	}
	e.last = resp
	return resp
}

func (e *envoy) recvErr() error {
	e.t.Helper()
	_, err := e.stream.Recv()
	if err == nil {
		e.t.Fatal("Recv succeeded, want an error")
	}
	return err
}

// secrets decodes a response into name → secret.
func secrets(t *testing.T, resp *discoveryv3.DiscoveryResponse) map[string]*tlsv3.Secret {
	t.Helper()
	out := map[string]*tlsv3.Secret{}
	for _, a := range resp.Resources {
		s := &tlsv3.Secret{}
		if err := a.UnmarshalTo(s); err != nil {
			t.Fatal(err)
		}
		out[s.Name] = s
	}
	return out
}

func newFake(t *testing.T) *fakeIdentities {
	ca := newTestCA(t)
	return &fakeIdentities{sub: &fakeSub{ca: ca, x: ca.context(t, frontendID), changed: make(chan struct{}, 1), exited: make(chan struct{})}}
}

func TestFirstResponseCarriesTheNamedSecrets(t *testing.T) {
	ids := newFake(t)
	e := openStream(t, startServer(t, ids))
	e.ask(frontendID, trustID)
	resp := e.recv()
	if resp.VersionInfo != "1" || resp.Nonce == "" || resp.TypeUrl != secretType {
		t.Fatalf("version=%q nonce=%q type=%q", resp.VersionInfo, resp.Nonce, resp.TypeUrl)
	}
	got := secrets(t, resp)
	cert := got[frontendID].GetTlsCertificate()
	if cert == nil || len(cert.CertificateChain.GetInlineBytes()) == 0 || len(cert.PrivateKey.GetInlineBytes()) == 0 {
		t.Fatalf("no tls_certificate for %s: %v", frontendID, got[frontendID])
	}
	svid, err := x509svid.Parse(cert.CertificateChain.GetInlineBytes(), cert.PrivateKey.GetInlineBytes())
	if err != nil || svid.ID.String() != frontendID {
		t.Fatalf("served certificate is not the SVID: %v %v", svid, err)
	}
	if roots := got[trustID].GetValidationContext().GetTrustedCa().GetInlineBytes(); len(roots) == 0 {
		t.Fatalf("no validation_context for %s", trustID)
	}
}

func TestEmptyNamesMeanEverything(t *testing.T) {
	e := openStream(t, startServer(t, newFake(t)))
	e.ask()
	got := secrets(t, e.recv())
	if len(got) != 2 || got[frontendID] == nil || got[trustID] == nil {
		t.Fatalf("got %v, want the SVID and the bundle", got)
	}
}

// TestProtocol drives one stream through ACKs, NACKs, stale nonces, name
// changes and rotations. An unwanted response would show up as the next
// message received, with the wrong version or names, and fail the step.
func TestProtocol(t *testing.T) {
	type step struct {
		name string
		do   func(e *envoy, sub *fakeSub)
		// what the next response must look like; empty means no response
		// is expected from this step (the next step's check proves it).
		wantVersion string
		wantNames   []string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"ACK is not answered; a name change is", []step{
			{name: "ask", do: func(e *envoy, _ *fakeSub) { e.ask(frontendID) }, wantVersion: "1", wantNames: []string{frontendID}},
			{name: "ack", do: func(e *envoy, _ *fakeSub) { e.ask(frontendID) }},
			{name: "add trust", do: func(e *envoy, _ *fakeSub) { e.ask(frontendID, trustID) }, wantVersion: "2", wantNames: []string{frontendID, trustID}},
		}},
		{"rotation pushes a new version", []step{
			{name: "ask", do: func(e *envoy, _ *fakeSub) { e.ask(frontendID) }, wantVersion: "1", wantNames: []string{frontendID}},
			{name: "ack", do: func(e *envoy, _ *fakeSub) { e.ask(frontendID) }},
			{name: "rotate", do: func(e *envoy, s *fakeSub) { s.rotate(e.t) }, wantVersion: "2", wantNames: []string{frontendID}},
		}},
		{"stale nonce is ignored", []step{
			{name: "ask", do: func(e *envoy, _ *fakeSub) { e.ask(frontendID) }, wantVersion: "1", wantNames: []string{frontendID}},
			{name: "stale", do: func(e *envoy, _ *fakeSub) {
				e.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{trustID}, ResponseNonce: "not-a-nonce-we-sent"})
			}},
			{name: "rotate", do: func(e *envoy, s *fakeSub) { s.rotate(e.t) }, wantVersion: "2", wantNames: []string{frontendID}},
		}},
		{"NACK is not answered with the same secrets", []step{
			{name: "ask", do: func(e *envoy, _ *fakeSub) { e.ask(frontendID) }, wantVersion: "1", wantNames: []string{frontendID}},
			{name: "nack", do: func(e *envoy, _ *fakeSub) {
				e.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{frontendID}, ResponseNonce: e.last.Nonce,
					ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: "bad cert"}})
			}},
			{name: "rotate", do: func(e *envoy, s *fakeSub) { s.rotate(e.t) }, wantVersion: "2", wantNames: []string{frontendID}},
		}},
		{"a change that does not touch the asked names is not sent", []step{
			{name: "ask", do: func(e *envoy, _ *fakeSub) { e.ask(trustID) }, wantVersion: "1", wantNames: []string{trustID}},
			{name: "ack", do: func(e *envoy, _ *fakeSub) { e.ask(trustID) }},
			{name: "rotate the SVID only", do: func(e *envoy, s *fakeSub) { s.rotate(e.t) }},
			{name: "ask for more", do: func(e *envoy, _ *fakeSub) { e.ask(trustID, "ROOTCA", "ALL") }, wantVersion: "2", wantNames: []string{trustID, "ROOTCA", "ALL"}},
		}},
		{"change before the first request waits for it", []step{
			{name: "rotate early", do: func(e *envoy, s *fakeSub) { s.rotate(e.t) }},
			{name: "ask", do: func(e *envoy, _ *fakeSub) { e.ask(trustID) }, wantVersion: "1", wantNames: []string{trustID}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids := newFake(t)
			e := openStream(t, startServer(t, ids))
			for _, s := range tt.steps {
				s.do(e, ids.sub)
				if s.wantVersion == "" {
					continue
				}
				resp := e.recv()
				got := secrets(t, resp)
				if resp.VersionInfo != s.wantVersion || len(got) != len(s.wantNames) {
					t.Fatalf("after %q: version %q with %d secrets, want version %q with %v", s.name, resp.VersionInfo, len(got), s.wantVersion, s.wantNames)
				}
				for _, n := range s.wantNames {
					if got[n] == nil {
						t.Fatalf("after %q: secret %q missing", s.name, n)
					}
				}
			}
		})
	}
}

func TestStreamErrors(t *testing.T) {
	tests := []struct {
		name  string
		ids   func(t *testing.T) *fakeIdentities
		names []string
		typ   string
		want  codes.Code
	}{
		{"name not entitled", newFake, []string{"spiffe://example.org/backend"}, "", codes.InvalidArgument},
		{"other trust domain", newFake, []string{"spiffe://partner.example"}, "", codes.InvalidArgument},
		{"wrong type url", newFake, nil, "type.googleapis.com/envoy.config.cluster.v3.Cluster", codes.InvalidArgument},
		{"caller without identity", func(t *testing.T) *fakeIdentities {
			f := newFake(t)
			f.sub.x = f.sub.ca.context(t)
			return f
		}, []string{frontendID}, "", codes.PermissionDenied},
		{"too many names", newFake, make([]string, maxResourceNames+1), "", codes.InvalidArgument},
		{"attestation failed", func(t *testing.T) *fakeIdentities {
			return &fakeIdentities{watchErr: errors.New("process is gone")}
		}, nil, "", codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := openStream(t, startServer(t, tt.ids(t)))
			e.send(&discoveryv3.DiscoveryRequest{ResourceNames: tt.names, TypeUrl: tt.typ})
			err := e.recvErr()
			if got := grpcstatus.Code(err); got != tt.want {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

func TestClientCloseEndsTheStream(t *testing.T) {
	e := openStream(t, startServer(t, newFake(t)))
	e.ask(frontendID)
	e.recv()
	if err := e.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.stream.Recv(); err != io.EOF {
		t.Fatalf("after CloseSend: %v, want io.EOF", err)
	}
}

func TestNACKIsCountedAndNotAnsweredWithTheSameSecrets(t *testing.T) {
	reg := prometheus.NewRegistry()
	ids := newFake(t)
	e := openStream(t, startServerWith(t, Options{Identities: ids, Registerer: reg}))
	e.ask(frontendID)
	first := e.recv()
	e.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{frontendID}, VersionInfo: "0", ResponseNonce: first.Nonce,
		ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: "bad cert"}})
	ids.sub.set(ids.sub.x) // a signal without new content
	// Requests are handled in order: the answer to this one comes after the
	// NACK was handled. Had the NACK or the empty signal been answered,
	// that answer would arrive first, as version 2 with one secret.
	e.ask(frontendID, trustID)
	if resp := e.recv(); resp.VersionInfo != "2" || len(resp.Resources) != 2 {
		t.Fatalf("got version %q with %d secrets, want version 2 answering the new names", resp.VersionInfo, len(resp.Resources))
	}
	if got := counter(t, reg, "meshid_sds_nacks_total"); got != 1 {
		t.Fatalf("meshid_sds_nacks_total = %v, want 1", got)
	}
}

// counter sums a counter family gathered from reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestClientVanishingMidPushLeaksNothing: a client that goes away while
// the server is pushing must end its stream's goroutines (goleak checks
// at the end of the package), on both protocols.
func TestClientVanishingMidPushLeaksNothing(t *testing.T) {
	ids := newFake(t)
	c := startServer(t, ids)
	for range 10 {
		ctx, cancel := context.WithCancel(context.Background())
		sotw, err := c.StreamSecrets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		delta, err := c.DeltaSecrets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sotw.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{frontendID}})
		delta.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: secretType})
		ids.sub.rotate(t)
		cancel()
	}
}

// The caller is whoever the transport credentials recorded for the
// connection: sds hands that over, whatever the request says.
func TestTheConnectionsAuthInfoIsWhoIsWatched(t *testing.T) {
	ids := newFake(t)
	conn := grpctest.Serve(t, "unix", func(s *grpc.Server) { New(Options{Identities: ids}).Register(s) },
		grpc.Creds(insecure.NewCredentials()))
	c := secretv3.NewSecretDiscoveryServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{frontendID}}); err != nil {
		t.Fatal(err)
	}
	e := openStream(t, c)
	e.ask(frontendID)
	e.recv()
	d := openDelta(t, c)
	d.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{frontendID}})
	d.recv()
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if len(ids.who) != 3 {
		t.Fatalf("%d Watch calls, want one per call", len(ids.who))
	}
	for i, who := range ids.who {
		if who == nil || who.AuthType() != "insecure" {
			t.Errorf("call %d: Watch got %v, want the connection's AuthInfo", i, who)
		}
	}
}

func TestACallWithoutAPeerIsRefused(t *testing.T) {
	ids := newFake(t)
	_, err := New(Options{Identities: ids}).FetchSecrets(context.Background(), &discoveryv3.DiscoveryRequest{TypeUrl: secretType})
	if grpcstatus.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "the call has no gRPC peer") {
		t.Fatalf("err = %v, want PermissionDenied saying there is no peer", err)
	}
	if len(ids.who) != 0 {
		t.Error("Watch was asked about a call without a peer")
	}
}

// When the CA can sign nothing, Envoy hears why, as Unavailable (retry),
// on every protocol.
func TestCAFailureReachesEnvoy(t *testing.T) {
	const why = "no valid CA generation: generation 3 expired at 2026-11-23T12:00:00Z; rotation failing since 2026-11-22T12:00:00Z: disk full"
	ids := newFake(t)
	ids.sub.err = fmt.Errorf("issue %s: %w", frontendID, errors.New(why))
	c := startServer(t, ids)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, fetchErr := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{frontendID}})
	e := openStream(t, c)
	e.ask(frontendID)
	d := openDelta(t, c)
	d.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{frontendID}})
	_, deltaErr := d.stream.Recv()
	for api, err := range map[string]error{"fetch": fetchErr, "state of the world": e.recvErr(), "delta": deltaErr} {
		if grpcstatus.Code(err) != codes.Unavailable || !strings.Contains(grpcstatus.Convert(err).Message(), why) {
			t.Errorf("%s: err = %v, want Unavailable saying %q", api, err, why)
		}
	}
}
