// Package sds serves Envoy's Secret Discovery Service (v3) with the resource
// names the SPIRE agent uses, so an Envoy configured for SPIRE works
// unchanged. It owns the xDS protocol bookkeeping (versions, nonces, ACKs,
// NACKs, state-of-the-world and delta) and the translation of SVIDs and
// bundles into Envoy secrets. It never decides who the caller is or what it
// is entitled to: it hands the connection's transport AuthInfo (the
// kernel's view of the caller, recorded at accept) to the Identities it is
// given, and they do.
package sds

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshid/meshid/internal/echo"
	"github.com/meshid/meshid/internal/liveset"
	"github.com/meshid/meshid/internal/logpace"
)

// Identities subscribes a caller to its identities. who is the AuthInfo
// the server's transport credentials recorded for the caller's connection
// (nil without any); ctx ends with the call.
type Identities interface {
	Watch(ctx context.Context, who credentials.AuthInfo) (Subscription, error)
}

// Subscription is one caller's live view of its identities.
type Subscription interface {
	// Changed signals that Current has something new. Signals coalesce
	// (latest wins), so a slow stream never holds up the others.
	Changed() <-chan struct{}
	// Current returns the caller's SVIDs and usable bundles; no SVIDs
	// means the caller is entitled to nothing.
	Current() (*workloadapi.X509Context, error)
	// Exited is closed once the caller's process has exited: its streams
	// end then and send nothing more, for whoever holds the connection
	// now (a process the socket was passed to) was never attested.
	Exited() <-chan struct{}
	Close()
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

// Server implements envoy.service.secret.v3.SecretDiscoveryService.
type Server struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	ids     Identities
	log     *slog.Logger
	metrics *metrics
	clock   func() time.Time
	// refusals paces the lines of refused resource names (refusals.go).
	refusals *logpace.Pacer[string]

	live liveset.Set[tracked] // the open streams, for Streams
}

// New returns an SDS server.
func New(o Options) *Server {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	return &Server{ids: o.Identities, log: o.Log, metrics: newMetrics(o.Registerer), clock: o.Clock, refusals: newRefusalPacer()}
}

// Register adds the SDS service to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	secretv3.RegisterSecretDiscoveryServiceServer(r, s)
}

// StreamSecrets answers one Envoy's state-of-the-world stream. It is a
// single loop: wait for a request or an identity change, then send the
// secrets asked for if there is something new to say.
func (s *Server) StreamSecrets(stream secretv3.SecretDiscoveryService_StreamSecretsServer) error {
	ctx := stream.Context()
	sub, err := s.watch(ctx)
	if err != nil {
		return err
	}
	defer sub.Close()
	defer s.metrics.open(apiSotW)()
	rec, untrack := s.track(apiSotW, sub)
	defer untrack()

	reqs, recvErr := receive(ctx, stream.Recv)
	var (
		names     []string     // what the caller asked for last
		requested bool         // whether it has asked at all
		plainCA   bool         // ALL as trusted_ca, from node metadata
		version   int          // of the last response on this stream
		nonce     string       // of the last response on this stream
		sent      []*anypb.Any // the last response's resources
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sub.Exited():
			return s.callerExited(apiSotW)
		case err := <-recvErr:
			return endOfStream(err)
		case req := <-reqs:
			if err := checkRequest(req.TypeUrl, req.ResourceNames); err != nil {
				return err
			}
			if req.Node != nil {
				plainCA = wantsPlainTrustedCA(req.Node)
				nodeSeen(rec, req.Node.Id)
			}
			if req.ResponseNonce != "" && req.ResponseNonce != nonce {
				continue // answers a response we have since superseded
			}
			if req.ErrorDetail != nil {
				// Envoy keeps what it had; sending the same secrets again
				// would be rejected again, so wait for something new.
				s.nack(rec, apiSotW, strconv.Itoa(version), req.VersionInfo, req.ResourceNames, req.ErrorDetail.GetMessage())
				continue
			}
			if req.ResponseNonce != "" && req.VersionInfo == strconv.Itoa(version) {
				acked(rec, s.clock()) // Envoy holds what was sent last
			}
			if requested && req.ResponseNonce == nonce && sameNames(names, req.ResourceNames) {
				continue // an ACK: nothing new to say
			}
			names, requested, sent = req.ResourceNames, true, nil
		case <-sub.Changed():
			if !requested {
				continue // the first response waits for the first request
			}
		}

		x, err := sub.Current()
		if err != nil {
			return status.Errorf(codes.Unavailable, "identities not available: %v", err)
		}
		v := view{x: x, plainTrustedCA: plainCA}
		secrets, err := v.secrets(names)
		if err != nil {
			s.refused(apiSotW, v, err)
			return err // includes withdrawal: no identity any more
		}
		resources, err := encode(secrets)
		if err != nil {
			return err
		}
		if sent != nil && sameResources(sent, resources) {
			continue // a change that does not touch what this Envoy asked for
		}
		if exited(sub) {
			return s.callerExited(apiSotW) // it may have exited while this was built
		}
		version++
		nonce = rand.Text()
		// Recorded before it is sent, so that whoever got it finds it in
		// Streams; a failed send ends the stream and its record.
		versions := make(map[string]string, len(secrets))
		for _, sec := range secrets {
			versions[sec.Name] = strconv.Itoa(version)
		}
		recordSent(rec, s.clock(), strconv.Itoa(version), v, true, versions, nil)
		if err := stream.Send(&discoveryv3.DiscoveryResponse{
			VersionInfo: strconv.Itoa(version),
			Resources:   resources,
			TypeUrl:     secretType,
			Nonce:       nonce,
		}); err != nil {
			return err
		}
		sent = resources
		s.metrics.responses.WithLabelValues(apiSotW).Inc()
		s.log.Debug("sent secrets", "api", apiSotW, "version", version, "resources", echo.ClipAll(names, maxEcho))
	}
}

// FetchSecrets answers one unary request with the secrets asked for. Its
// version is a digest of the content, so equal answers carry equal versions.
func (s *Server) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	if err := checkRequest(req.TypeUrl, req.ResourceNames); err != nil {
		return nil, err
	}
	sub, err := s.watch(ctx)
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	x, err := sub.Current()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "identities not available: %v", err)
	}
	v := view{x: x, plainTrustedCA: wantsPlainTrustedCA(req.Node)}
	secrets, err := v.secrets(req.ResourceNames)
	if err != nil {
		s.refused(apiFetch, v, err)
		return nil, err
	}
	resources, err := encode(secrets)
	if err != nil {
		return nil, err
	}
	if exited(sub) {
		return nil, errCallerExited
	}
	return &discoveryv3.DiscoveryResponse{
		VersionInfo: digest(resources...),
		Resources:   resources,
		TypeUrl:     secretType,
	}, nil
}

// errNoPeer refuses a call gRPC knows no connection for: there is no one
// for the kernel to name.
var errNoPeer = status.Error(codes.PermissionDenied,
	"cannot attest the caller: the call has no gRPC peer, so there is no connection to ask the kernel about")

// errCallerExited ends a stream whose caller's process has exited.
// Unavailable is what Envoy takes for "reconnect", and a reconnecting
// process is attested afresh; the socket's new holder, if the caller passed
// it on, is refused then.
var errCallerExited = status.Error(codes.Unavailable,
	"the attested process exited: nothing more is served on its connection; reconnect to be attested afresh")

func (s *Server) callerExited(api string) error {
	s.log.Debug("stream ended: the attested process exited", "api", api)
	return errCallerExited
}

// exited reports whether the caller's process has exited, without waiting.
func exited(sub Subscription) bool {
	select {
	case <-sub.Exited():
		return true
	default:
		return false
	}
}

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

// nack records Envoy's rejection of the response of version rejected;
// holds is the version Envoy says it keeps (a state-of-the-world NACK's
// version_info: the last it accepted).
func (s *Server) nack(rec *record, api, rejected, holds string, names []string, message string) {
	nacked(rec, s.clock(), rejected, message)
	s.metrics.nacks.WithLabelValues(api).Inc()
	s.log.Warn("Envoy rejected secrets (NACK)", "api", api, "version", rejected, "envoy_holds", echo.Clip(holds, maxEcho),
		"resources", echo.ClipAll(names, maxEcho), "error", echo.Clip(message, maxEchoDetail))
}

// checkRequest validates what every request carries.
func checkRequest(typeURL string, names []string) error {
	if typeURL != "" && typeURL != secretType {
		return status.Errorf(codes.InvalidArgument, "type_url %s: this server only serves %s", echo.Quote(typeURL, maxEcho), secretType)
	}
	return checkNames(names)
}

// receive moves requests from a stream onto a channel so that a handler
// can select on them; it stops when the stream does.
func receive[Req any](ctx context.Context, recv func() (Req, error)) (<-chan Req, <-chan error) {
	reqs := make(chan Req)
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	return reqs, errc
}

// endOfStream maps the client closing its side to a clean end.
func endOfStream(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func sameNames(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

func sameResources(a, b []*anypb.Any) bool {
	return slices.EqualFunc(a, b, func(x, y *anypb.Any) bool { return proto.Equal(x, y) })
}

// digest names content: the first 16 hex digits of a SHA-256 over it.
func digest(resources ...*anypb.Any) string {
	h := sha256.New()
	for _, r := range resources {
		h.Write([]byte(r.TypeUrl))
		h.Write(r.Value)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}
