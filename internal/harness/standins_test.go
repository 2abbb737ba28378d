package harness

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/anypb"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// The stand-ins below play meshid's two roles towards Envoy (SDS and
// ext_authz) so that the bootstrap templates and the demo wiring are tested
// end to end without cmd/meshid. They trust the resource name they are asked
// for, which meshid never does: they test Envoy's side, not attestation.

// testCA issues SVIDs for any SPIFFE ID.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, trustDomain string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	td := &url.URL{Scheme: "spiffe", Host: trustDomain}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"harness test CA"}},
		URIs:                  []*url.URL{td},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

var serials struct {
	sync.Mutex
	n int64
}

func (ca *testCA) issue(id string) (certPEM, keyPEM []byte, err error) {
	u, err := url.Parse(id)
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serials.Lock()
	serials.n++
	serial := big.NewInt(1000 + serials.n)
	serials.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		URIs:         []*url.URL{u},
		NotBefore:    time.Now().Add(-10 * time.Second),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// fakeSDS answers every SDS request for a SPIFFE ID with a fresh SVID and
// for "spiffe://<td>" with the CA. It answers only when the requested names
// change, so ACKs are not answered.
type fakeSDS struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	ca          *testCA
	trustDomain string
}

func (s *fakeSDS) StreamSecrets(stream secretv3.SecretDiscoveryService_StreamSecretsServer) error {
	var sent []string
	version := 0
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if slices.Equal(req.GetResourceNames(), sent) {
			continue
		}
		sent = slices.Clone(req.GetResourceNames())
		version++
		resp := &discoveryv3.DiscoveryResponse{
			VersionInfo: fmt.Sprint(version),
			TypeUrl:     req.GetTypeUrl(),
			Nonce:       fmt.Sprint(version),
		}
		for _, name := range sent {
			secret, err := s.secret(name)
			if err != nil {
				return err
			}
			a, err := anypb.New(secret)
			if err != nil {
				return err
			}
			resp.Resources = append(resp.Resources, a)
		}
		if err := stream.Send(resp); err != nil {
			return nil
		}
	}
}

func (s *fakeSDS) secret(name string) (*tlsv3.Secret, error) {
	if name == "spiffe://"+s.trustDomain {
		return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{
			ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: s.ca.pem}},
			},
		}}, nil
	}
	certPEM, keyPEM, err := s.ca.issue(name)
	if err != nil {
		return nil, err
	}
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{
		TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: certPEM}},
			PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: keyPEM}},
		},
	}}, nil
}

// fakeAuthz allows what the shipped demo policy allows: the frontend's
// GET /hello. It records the principals Envoy reported.
type fakeAuthz struct {
	authv3.UnimplementedAuthorizationServer
	mu         sync.Mutex
	principals []string
}

func (a *fakeAuthz) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	attrs := req.GetAttributes()
	principal := attrs.GetSource().GetPrincipal()
	http := attrs.GetRequest().GetHttp()
	a.mu.Lock()
	a.principals = append(a.principals, principal)
	a.mu.Unlock()
	if principal == FrontendID && http.GetMethod() == "GET" && strings.SplitN(http.GetPath(), "?", 2)[0] == "/hello" {
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.OK)}}, nil
	}
	return &authv3.CheckResponse{
		Status: &status.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Body:   "denied by stand-in policy",
		}},
	}, nil
}

func (a *fakeAuthz) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.principals)
}

// startStandIns serves fakeSDS on a world-reachable Unix socket and
// fakeAuthz on TCP, and returns a Meshid that points at them.
func startStandIns(t *testing.T, e *Env) (*Meshid, *fakeAuthz) {
	t.Helper()
	sockDir, err := e.MkdirAll("standin-sock")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(sockDir, "agent.sock")
	sdsLn, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o777); err != nil {
		t.Fatal(err)
	}
	authzAddr := e.FreeAddr()
	authzLn, err := net.Listen("tcp", authzAddr)
	if err != nil {
		t.Fatal(err)
	}

	authz := &fakeAuthz{}
	srv := grpc.NewServer()
	secretv3.RegisterSecretDiscoveryServiceServer(srv, &fakeSDS{ca: newTestCA(t, DemoTrustDomain), trustDomain: DemoTrustDomain})
	authv3.RegisterAuthorizationServer(srv, authz)
	var wg sync.WaitGroup
	for _, ln := range []net.Listener{sdsLn, authzLn} {
		wg.Go(func() { _ = srv.Serve(ln) })
	}
	t.Cleanup(func() {
		srv.Stop()
		wg.Wait()
	})
	return &Meshid{TrustDomain: DemoTrustDomain, SocketPath: sock, AuthzAddr: authzAddr}, authz
}

// assertBody fails unless body contains every want.
func assertBody(t *testing.T, what string, body []byte, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(string(body), w) {
			t.Errorf("%s: body %q does not contain %q", what, body, w)
		}
	}
}
