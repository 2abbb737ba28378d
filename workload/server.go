// Package workload serves the SPIFFE Workload API on meshid's socket, so
// that unmodified go-spiffe clients (X509Source, JWTSource, spiffetls,
// helper programs) get the same rotating identities as Envoy does over
// SDS. It owns the API's wire format and its rules (the security header,
// streaming updates). It never decides who the caller is or what it is
// entitled to: it hands the connection's transport AuthInfo (the kernel's
// view of the caller, recorded at accept) to the Identities it is given,
// and they do.
package workload

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshid/meshid/internal/echo"
	"github.com/meshid/meshid/internal/liveset"
)

// Identities subscribes a caller to its identities. who is the AuthInfo
// the server's transport credentials recorded for the caller's connection
// (nil without any); ctx ends with the call.
type Identities interface {
	Watch(ctx context.Context, who credentials.AuthInfo) (Subscription, error)
}

// Subscription is one caller's live view of its identities.
type Subscription interface {
	// Changed signals that something below may have changed; signals
	// coalesce, latest wins.
	Changed() <-chan struct{}
	Current() (*workloadapi.X509Context, error)
	JWTSVIDs(audience []string) ([]JWTSVID, error)
	// JWTBundles is every JWT bundle the caller may use: its own trust
	// domain's and the federated ones its entries grant. FetchJWTBundles
	// sends them and ValidateJWTSVID validates against them, so the two
	// never disagree.
	JWTBundles() *jwtbundle.Set
	// Exited is closed once the caller's process has exited: its streams
	// end then and nothing more is sent to it, for whoever holds the
	// connection now (a process the socket was passed to) was never
	// attested.
	Exited() <-chan struct{}
	Close()
}

// JWTSVID is a signed token for one of the caller's identities.
type JWTSVID struct {
	ID    spiffeid.ID
	Token string
}

// Options configures a Server.
type Options struct {
	Identities Identities
	Log        *slog.Logger
	// Registerer receives the server's metrics; nil leaves them unregistered.
	Registerer prometheus.Registerer
	// Clock stamps what Streams reports; nil means time.Now.
	Clock func() time.Time
}

// Server implements the SPIFFE Workload API.
type Server struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
	ids     Identities
	log     *slog.Logger
	metrics metrics
	clock   func() time.Time

	live liveset.Set[Stream] // the open streams, for Streams
}

// New returns a Workload API server.
func New(o Options) *Server {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return &Server{ids: o.Identities, log: o.Log, metrics: newMetrics(o.Registerer), clock: o.Clock}
}

// Register adds the Workload API to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	workloadpb.RegisterSpiffeWorkloadAPIServer(r, s)
}

// securityHeader must be set by every Workload API client: it shows the
// request was meant for this API (SPIFFE Workload API specification).
const securityHeader = "workload.spiffe.io"

// errNoIdentity tells a caller no entry matches it, and what to do.
var errNoIdentity = status.Error(codes.PermissionDenied,
	"no identity issued: no meshid entry matches this process; meshid logs the selectors it presented "+
		"(or run `meshid entry explain -pid PID`): add an entry for them")

// FetchX509SVID streams the caller's X509-SVIDs with their bundles, and
// again whenever they change.
func (s *Server) FetchX509SVID(_ *workloadpb.X509SVIDRequest, stream workloadpb.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	return s.stream(stream.Context(), methodX509SVID, func(sub Subscription) (proto.Message, error) {
		x, err := current(sub)
		if err != nil {
			return nil, err
		}
		return x509SVIDResponse(x)
	}, func(m proto.Message) error { return stream.Send(m.(*workloadpb.X509SVIDResponse)) })
}

// FetchX509Bundles streams the X.509 bundles the caller may use.
func (s *Server) FetchX509Bundles(_ *workloadpb.X509BundlesRequest, stream workloadpb.SpiffeWorkloadAPI_FetchX509BundlesServer) error {
	return s.stream(stream.Context(), methodX509Bundles, func(sub Subscription) (proto.Message, error) {
		x, err := current(sub)
		if err != nil {
			return nil, err
		}
		resp := &workloadpb.X509BundlesResponse{Bundles: map[string][]byte{}}
		for _, b := range x.Bundles.Bundles() {
			resp.Bundles[b.TrustDomain().IDString()] = concatDER(b.X509Authorities())
		}
		return resp, nil
	}, func(m proto.Message) error { return stream.Send(m.(*workloadpb.X509BundlesResponse)) })
}

// FetchJWTBundles streams the JWT bundles (JWKS) the caller may use.
func (s *Server) FetchJWTBundles(_ *workloadpb.JWTBundlesRequest, stream workloadpb.SpiffeWorkloadAPI_FetchJWTBundlesServer) error {
	return s.stream(stream.Context(), methodJWTBundles, func(sub Subscription) (proto.Message, error) {
		if _, err := current(sub); err != nil {
			return nil, err
		}
		resp := &workloadpb.JWTBundlesResponse{Bundles: map[string][]byte{}}
		for _, b := range sub.JWTBundles().Bundles() {
			jwks, err := b.Marshal()
			if err != nil {
				return nil, status.Errorf(codes.Internal, "encode JWT bundle %s: %v", b.TrustDomain(), err)
			}
			resp.Bundles[b.TrustDomain().IDString()] = jwks
		}
		return resp, nil
	}, func(m proto.Message) error { return stream.Send(m.(*workloadpb.JWTBundlesResponse)) })
}

// FetchJWTSVID returns a JWT-SVID for the audience for each of the caller's
// identities, or for the one named.
func (s *Server) FetchJWTSVID(ctx context.Context, req *workloadpb.JWTSVIDRequest) (*workloadpb.JWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	if len(req.Audience) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	var want spiffeid.ID
	if req.SpiffeId != "" {
		id, err := spiffeid.FromString(req.SpiffeId)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "spiffe_id %s: %v", echo.Quote(req.SpiffeId, maxEcho), err)
		}
		want = id
	}
	sub, err := s.watch(ctx)
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	if _, err := current(sub); err != nil {
		return nil, err
	}
	svids, err := sub.JWTSVIDs(req.Audience)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "issue JWT-SVID: %v", err)
	}
	resp := &workloadpb.JWTSVIDResponse{}
	for _, svid := range svids {
		if want.IsZero() || svid.ID == want {
			resp.Svids = append(resp.Svids, &workloadpb.JWTSVID{SpiffeId: svid.ID.String(), Svid: svid.Token})
		}
	}
	if len(resp.Svids) == 0 {
		return nil, status.Errorf(codes.PermissionDenied, "no identity issued for %s to this process", echo.Quote(req.SpiffeId, maxEcho))
	}
	if exited(sub) {
		return nil, errCallerExited
	}
	return resp, nil
}

// ValidateJWTSVID checks a token for the audience against the JWT bundles
// the caller may use (FetchJWTBundles' set) and returns its SPIFFE ID and
// claims: a token of a federated trust domain validates only for a caller
// that federates with it. Any attested caller may validate; it needs no
// identity of its own, and then gets only this node's trust domain.
func (s *Server) ValidateJWTSVID(ctx context.Context, req *workloadpb.ValidateJWTSVIDRequest) (*workloadpb.ValidateJWTSVIDResponse, error) {
	if err := checkHeader(ctx); err != nil {
		return nil, err
	}
	switch {
	case req.Audience == "":
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	case req.Svid == "":
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	sub, err := s.watch(ctx) // the caller must still be one the kernel can name
	if err != nil {
		return nil, err
	}
	bundles := sub.JWTBundles()
	defer sub.Close()
	svid, err := jwtsvid.ParseAndValidate(req.Svid, bundles, []string{req.Audience})
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "invalid JWT-SVID: %s", echo.Clip(err.Error(), maxEchoDetail))
	}
	if exited(sub) {
		return nil, errCallerExited
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "encode claims: %v", err)
	}
	return &workloadpb.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}

// stream is the loop of every streaming call: build the response from the
// subscription, send it if it differs from the last one, wait for a change.
func (s *Server) stream(ctx context.Context, method string, build func(Subscription) (proto.Message, error), send func(proto.Message) error) error {
	if err := checkHeader(ctx); err != nil {
		return err
	}
	sub, err := s.watch(ctx)
	if err != nil {
		return err
	}
	defer sub.Close()
	rec, untrack := s.track(method, sub)
	defer untrack()
	var last proto.Message
	for {
		resp, err := build(sub)
		if err != nil {
			return err
		}
		if last == nil || !proto.Equal(last, resp) {
			if exited(sub) {
				return errCallerExited // it may have exited while this was built
			}
			s.sent(rec, method)
			if err := send(resp); err != nil {
				return err
			}
			last = resp
		}
		select {
		case <-ctx.Done():
			return nil
		case <-sub.Exited():
			return errCallerExited
		case <-sub.Changed():
		}
	}
}

// errCallerExited ends a stream, or refuses a call, of a caller whose
// process has exited. Unavailable is what go-spiffe clients retry on, and
// a reconnecting process is attested afresh; the socket's new holder, if
// the caller passed it on, is refused then.
var errCallerExited = status.Error(codes.Unavailable,
	"the attested process exited: nothing more is served on its connection; reconnect to be attested afresh")

// exited reports whether the caller's process has exited, without waiting.
func exited(sub Subscription) bool {
	select {
	case <-sub.Exited():
		return true
	default:
		return false
	}
}

// errNoPeer refuses a call gRPC knows no connection for: there is no one
// for the kernel to name.
var errNoPeer = status.Error(codes.PermissionDenied,
	"cannot attest the caller: the call has no gRPC peer, so there is no connection to ask the kernel about")

// watch subscribes the caller of the call in ctx, refusing one that cannot
// be attested.
func (s *Server) watch(ctx context.Context) (Subscription, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, errNoPeer
	}
	sub, err := s.ids.Watch(ctx, p.AuthInfo)
	if err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "cannot attest the caller: %v", err)
	}
	return sub, nil
}

func checkHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if !slices.Contains(md.Get(securityHeader), "true") {
		return status.Errorf(codes.InvalidArgument, "security header missing from request: set metadata %q to \"true\"", securityHeader)
	}
	return nil
}

// current returns the caller's X509 context, refusing a caller with none.
func current(sub Subscription) (*workloadapi.X509Context, error) {
	x, err := sub.Current()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "identities not available: %v", err)
	}
	if len(x.SVIDs) == 0 {
		return nil, errNoIdentity
	}
	return x, nil
}

func x509SVIDResponse(x *workloadapi.X509Context) (*workloadpb.X509SVIDResponse, error) {
	resp := &workloadpb.X509SVIDResponse{}
	own := map[spiffeid.TrustDomain]bool{}
	for _, svid := range x.SVIDs {
		td := svid.ID.TrustDomain()
		bundle, err := x.Bundles.GetX509BundleForTrustDomain(td)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "no bundle for %s yet", td)
		}
		key, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "encode key of %s: %v", svid.ID, err)
		}
		resp.Svids = append(resp.Svids, &workloadpb.X509SVID{
			SpiffeId:    svid.ID.String(),
			X509Svid:    concatDER(svid.Certificates),
			X509SvidKey: key,
			Bundle:      concatDER(bundle.X509Authorities()),
		})
		own[td] = true
	}
	for _, b := range x.Bundles.Bundles() {
		if !own[b.TrustDomain()] {
			if resp.FederatedBundles == nil {
				resp.FederatedBundles = map[string][]byte{}
			}
			resp.FederatedBundles[b.TrustDomain().IDString()] = concatDER(b.X509Authorities())
		}
	}
	return resp, nil
}

func concatDER(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		b.Write(c.Raw)
	}
	return b.Bytes()
}
