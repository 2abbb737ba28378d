// Package sds serves Envoy's Secret Discovery Service (v3) with the resource
// names the SPIRE agent uses, so an Envoy configured for SPIRE works
// unchanged. It owns the xDS protocol bookkeeping (versions, nonces, ACKs)
// and the translation of SVIDs and bundles into Envoy secrets. It never
// decides who the caller is or what it is entitled to: the Identities it is
// given do, from the kernel's view of the connection.
package sds

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Identities subscribes the gRPC caller found in ctx to its identities.
type Identities interface {
	Watch(ctx context.Context) (Subscription, error)
}

// Subscription is one caller's live view of its identities.
type Subscription interface {
	// Changed signals that Current has something new; signals coalesce.
	Changed() <-chan struct{}
	// Current returns the caller's SVIDs and usable bundles; no SVIDs
	// means the caller is entitled to nothing.
	Current() (*workloadapi.X509Context, error)
	Close()
}

// Server implements envoy.service.secret.v3.SecretDiscoveryService.
type Server struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	ids Identities
	log *slog.Logger
}

// New returns an SDS server that takes identities from ids.
func New(ids Identities, log *slog.Logger) *Server {
	return &Server{ids: ids, log: log}
}

// Register adds the SDS service to a gRPC server.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	secretv3.RegisterSecretDiscoveryServiceServer(r, s)
}

// StreamSecrets answers one Envoy's SotW stream. It is a single loop: wait
// for a request or an identity change, then send the secrets asked for if
// there is something new to say.
func (s *Server) StreamSecrets(stream secretv3.SecretDiscoveryService_StreamSecretsServer) error {
	ctx := stream.Context()
	sub, err := s.ids.Watch(ctx)
	if err != nil {
		return status.Errorf(codes.PermissionDenied, "cannot attest the caller: %v", err)
	}
	defer sub.Close()

	reqs, recvErr := receive(ctx, stream)
	var (
		names     []string // what the caller asked for last
		requested bool     // whether it has asked at all
		version   int      // of the last response on this stream
		nonce     string   // of the last response on this stream
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case req := <-reqs:
			if req.TypeUrl != "" && req.TypeUrl != secretType {
				return status.Errorf(codes.InvalidArgument, "type_url %q: this server only serves %s", req.TypeUrl, secretType)
			}
			if req.ResponseNonce != "" && req.ResponseNonce != nonce {
				continue // answers a response we have since superseded
			}
			if req.ErrorDetail != nil {
				s.log.Warn("Envoy rejected secrets (NACK)", "version", req.VersionInfo, "resources", req.ResourceNames, "error", req.ErrorDetail.Message)
				continue // sending the same secrets again would be rejected again
			}
			if requested && req.ResponseNonce == nonce && sameNames(names, req.ResourceNames) {
				continue // an ACK: nothing new to say
			}
			names, requested = req.ResourceNames, true
		case <-sub.Changed():
			if !requested {
				continue
			}
		}

		x, err := sub.Current()
		if err != nil {
			return status.Errorf(codes.Unavailable, "identities not available: %v", err)
		}
		resources, err := secretsFor(names, x)
		if err != nil {
			return err
		}
		version++
		nonce = rand.Text()
		if err := stream.Send(&discoveryv3.DiscoveryResponse{
			VersionInfo: strconv.Itoa(version),
			Resources:   resources,
			TypeUrl:     secretType,
			Nonce:       nonce,
		}); err != nil {
			return err
		}
		s.log.Debug("sent secrets", "version", version, "resources", names)
	}
}

// receive moves requests from the stream onto a channel so the handler can
// select on them; it stops when the stream does.
func receive(ctx context.Context, stream secretv3.SecretDiscoveryService_StreamSecretsServer) (<-chan *discoveryv3.DiscoveryRequest, <-chan error) {
	reqs := make(chan *discoveryv3.DiscoveryRequest)
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
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

func sameNames(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}

// errNoIdentity is what a caller no entry matches hears; meshid's log names
// the selectors it presented.
var errNoIdentity = status.Error(codes.PermissionDenied,
	"no identity issued: no meshid entry matches this process (meshid logs the selectors it presented; add an entry for them)")

func notEntitled(name string) error {
	return status.Error(codes.InvalidArgument, fmt.Sprintf("resource %q: not an identity or trust domain this caller is entitled to", name))
}
