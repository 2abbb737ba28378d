package svidtest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshid/meshid/test/grpctest"
)

// JWTKeyID is the key id of the JWT-SVIDs the fake Workload API signs, in
// the JWT bundle it gives.
const JWTKeyID = "k1"

// workloadAPI is a Workload API, as the wire has it, that gives every
// caller one X509-SVID, its trust domain's roots and JWT-SVIDs signed with
// one key, which it also validates.
type workloadAPI struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
	id      spiffeid.ID
	x509    *workloadpb.X509SVIDResponse
	roots   []byte // DER
	jwtKey  *ecdsa.PrivateKey
	jwtKeys *jwtbundle.Set
}

// ServeWorkloadAPI serves s, the CA's roots and JWT-SVIDs for s's SPIFFE
// ID on a fake Workload API, with gRPC health (SERVING), on a real socket
// until the test ends, and returns the socket's path.
func ServeWorkloadAPI(t testing.TB, ca *CA, s *x509svid.SVID) string {
	t.Helper()
	cert, key, err := s.MarshalRaw()
	if err != nil {
		t.Fatal(err)
	}
	jwtKey := newKey(t)
	api := &workloadAPI{
		id: s.ID,
		x509: &workloadpb.X509SVIDResponse{Svids: []*workloadpb.X509SVID{{
			SpiffeId: s.ID.String(), X509Svid: cert, X509SvidKey: key, Bundle: ca.Root.Raw,
		}}},
		roots:   ca.Root.Raw,
		jwtKey:  jwtKey,
		jwtKeys: jwtbundle.NewSet(jwtbundle.FromJWTAuthorities(ca.TD, map[string]crypto.PublicKey{JWTKeyID: jwtKey.Public()})),
	}
	conn := grpctest.Serve(t, "unix", func(srv *grpc.Server) {
		workloadpb.RegisterSpiffeWorkloadAPIServer(srv, api)
		healthpb.RegisterHealthServer(srv, health.NewServer())
	})
	return strings.TrimPrefix(conn.Target(), "unix://")
}

func (a *workloadAPI) FetchX509SVID(_ *workloadpb.X509SVIDRequest, stream workloadpb.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	return sendAndWait(stream.Context(), func() error { return stream.Send(a.x509) })
}

func (a *workloadAPI) FetchX509Bundles(_ *workloadpb.X509BundlesRequest, stream workloadpb.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	resp := &workloadpb.X509BundlesResponse{Bundles: map[string][]byte{a.id.TrustDomain().IDString(): a.roots}}
	return sendAndWait(stream.Context(), func() error { return stream.Send(resp) })
}

func (a *workloadAPI) FetchJWTBundles(_ *workloadpb.JWTBundlesRequest, stream workloadpb.SpiffeWorkloadAPI_FetchJWTBundlesServer) error {
	b, _ := a.jwtKeys.Get(a.id.TrustDomain())
	jwks, err := b.Marshal()
	if err != nil {
		return err
	}
	resp := &workloadpb.JWTBundlesResponse{Bundles: map[string][]byte{a.id.TrustDomain().IDString(): jwks}}
	return sendAndWait(stream.Context(), func() error { return stream.Send(resp) })
}

func (a *workloadAPI) FetchJWTSVID(_ context.Context, req *workloadpb.JWTSVIDRequest) (*workloadpb.JWTSVIDResponse, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: a.jwtKey, KeyID: JWTKeyID}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, err
	}
	token, err := jwt.Signed(signer).Claims(jwt.Claims{
		Subject: a.id.String(), Audience: req.Audience,
		Expiry: jwt.NewNumericDate(time.Now().Add(5 * time.Minute)), IssuedAt: jwt.NewNumericDate(time.Now()),
	}).Serialize()
	if err != nil {
		return nil, err
	}
	return &workloadpb.JWTSVIDResponse{Svids: []*workloadpb.JWTSVID{{SpiffeId: a.id.String(), Svid: token}}}, nil
}

func (a *workloadAPI) ValidateJWTSVID(_ context.Context, req *workloadpb.ValidateJWTSVIDRequest) (*workloadpb.ValidateJWTSVIDResponse, error) {
	s, err := jwtsvid.ParseAndValidate(req.Svid, a.jwtKeys, []string{req.Audience})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid JWT-SVID: %v", err)
	}
	claims, err := structpb.NewStruct(s.Claims)
	if err != nil {
		return nil, err
	}
	return &workloadpb.ValidateJWTSVIDResponse{SpiffeId: s.ID.String(), Claims: claims}, nil
}

// sendAndWait sends a stream's one response and holds the stream open, as
// meshid does until something changes.
func sendAndWait(ctx context.Context, send func() error) error {
	if err := send(); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
