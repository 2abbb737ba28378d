package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/internal/config"
)

// authzService is meshid's ext_authz front door: the compiled policies and
// the gRPC server that answers Envoy's Check calls with them.
type authzService struct {
	cfg    config.Authz
	server *grpc.Server
	lis    net.Listener
}

// newAuthzService compiles the policies; it opens no socket yet, so a start
// refused for other reasons leaves nothing to clean up.
func newAuthzService(ctx context.Context, cfg config.Authz, log *slog.Logger) (*authzService, error) {
	engine, err := authz.NewEngine(ctx, authz.Config{PolicyDir: cfg.PolicyDir, Decision: cfg.Decision, EvalTimeout: cfg.EvalTimeout})
	if err != nil {
		return nil, fmt.Errorf("authz.policy_dir: %w", err)
	}
	s := &authzService{cfg: cfg, server: grpc.NewServer()}
	srv, err := authz.NewServer(engine, authz.Options{Log: log})
	if err != nil {
		return nil, err
	}
	srv.Register(s.server)
	healthpb.RegisterHealthServer(s.server, health.NewServer())
	return s, nil
}

// listen opens the authz listener.
func (s *authzService) listen() (err error) {
	if s.lis, err = net.Listen("tcp", s.cfg.Address); err != nil {
		return fmt.Errorf("authz.address: %w", err)
	}
	return nil
}

// run serves until ctx ends.
func (s *authzService) run(ctx context.Context) error { return serveGRPC(ctx, s.server, s.lis) }

func (s *authzService) addr() string { return s.lis.Addr().String() }

func (s *authzService) close() {
	if s.lis != nil {
		s.lis.Close()
	}
}
