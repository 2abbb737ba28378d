package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/internal/config"
)

// authzService is meshid's ext_authz front door: the compiled policies,
// the gRPC server (and optionally the HTTP one) that answer Envoy with
// them, the policy dir watch and the decision log.
type authzService struct {
	cfg       config.Authz
	log       *slog.Logger
	srv       *authz.Server
	grpc      *grpc.Server
	http      *http.Server // nil unless authz.http_address is set
	reloader  *authz.Reloader
	decisions *authz.DecisionLog // nil unless authz.decision_log is set
	jwt       *authorityJWTBundles
	self      *selfIdentity // nil unless authz.tls.spiffe_id is set

	lis, httpLis net.Listener
	logFile      io.WriteCloser
}

// newAuthzService compiles the policies; it opens no socket or file yet,
// so a start refused for other reasons leaves nothing to clean up.
// selfTTL is the lifetime of meshid's own SVID when authz.tls is on.
func newAuthzService(ctx context.Context, cfg config.Authz, selfTTL time.Duration, log *slog.Logger, reg prometheus.Registerer) (*authzService, error) {
	engineCfg := authz.Config{
		PolicyDir:   cfg.PolicyDir,
		Decision:    cfg.Decision,
		EvalTimeout: cfg.EvalTimeout,
		RegoV0:      cfg.RegoVersion == "v0",
	}
	engine, err := authz.NewEngine(ctx, engineCfg)
	if err != nil {
		return nil, fmt.Errorf("authz.policy_dir: %w", err)
	}
	var protos *authz.ProtoDescriptors
	if cfg.ProtoDescriptor != "" {
		if protos, err = authz.LoadProtoDescriptors(cfg.ProtoDescriptor); err != nil {
			return nil, fmt.Errorf("authz.proto_descriptor: %w", err)
		}
	}
	s := &authzService{cfg: cfg, log: log, jwt: &authorityJWTBundles{}}
	if cfg.DecisionLog != "" {
		s.decisions = authz.NewDecisionLog(authz.DecisionLogOptions{
			MaskHeaders: cfg.DecisionLogMask,
			QueueSize:   cfg.DecisionLogQueue,
			SampleRate:  cfg.DecisionLogSampleRate,
			Log:         log,
		})
	}
	s.srv, err = authz.NewServer(engine, authz.Options{
		Log:              log,
		DenyStatus:       cfg.DenyStatus,
		DryRun:           cfg.DryRun,
		TrustXFCC:        cfg.XFCC.Trust,
		XFCCProxies:      cfg.XFCC.Proxies,
		JWTAudiences:     cfg.JWTAudiences,
		JWTBundles:       s.jwt,
		ProtoDescriptors: protos,
		DecisionLog:      s.decisions,
		Metrics:          reg,
	})
	if err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	s.reloader = authz.NewReloader(s.srv, engineCfg, cfg.ReloadInterval, log)

	var grpcOpts []grpc.ServerOption
	if cfg.TLS.SPIFFEID != "" {
		id, err := spiffeid.FromString(cfg.TLS.SPIFFEID)
		if err != nil {
			return nil, fmt.Errorf("authz.tls.spiffe_id: %w", err)
		}
		s.self = newSelfIdentity(id, selfTTL)
	}
	tlsCfg, err := authzTLSConfig(cfg.TLS, s.self)
	if err != nil {
		return nil, err
	}
	if tlsCfg != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(tlsCfg)))
	}
	s.grpc = grpc.NewServer(grpcOpts...)
	s.srv.Register(s.grpc)
	healthpb.RegisterHealthServer(s.grpc, health.NewServer())
	if cfg.Reflection {
		reflection.Register(s.grpc)
	}
	if cfg.HTTPAddress != "" {
		s.http = &http.Server{
			Handler:           s.srv.HTTPHandler(),
			ReadHeaderTimeout: 5 * time.Second,
			TLSConfig:         tlsCfg,
			// Refused handshakes and broken requests are the operator's
			// to see, in meshid's log rather than on bare stderr.
			ErrorLog: slog.NewLogLogger(log.With("server", "authz.http_address").Handler(), slog.LevelWarn),
		}
	}
	if cfg.DryRun {
		log.Warn("authz: dry run: every request is allowed; the decision log and the debug log say what the policy decided")
	}
	return s, nil
}

// useAuthority makes JWT-SVIDs validate against the CA's JWT bundle (the
// CA is opened after the policies compile, so it arrives late). Until it
// is called every JWT-SVID is reported invalid.
func (s *authzService) useAuthority(a *ca.Authority) {
	s.jwt.a.Store(a)
	if s.self != nil {
		s.self.authority.Store(a)
		s.log.Info("authz: serving mutual TLS with meshid's own SVID", "spiffe_id", s.self.id, "client_ids", s.cfg.TLS.ClientIDs)
	}
	if len(s.cfg.JWTAudiences) > 0 {
		s.log.Info("authz: JWT-SVIDs are validated against the CA's JWT bundle", "audiences", s.cfg.JWTAudiences)
	}
}

// listen opens the listeners and the decision log file.
func (s *authzService) listen() (err error) {
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.lis, err = listenAuthz("authz.address", s.cfg.Address); err != nil {
		return err
	}
	if s.http != nil {
		if s.httpLis, err = listenAuthz("authz.http_address", s.cfg.HTTPAddress); err != nil {
			return err
		}
		if s.http.TLSConfig != nil {
			s.httpLis = tls.NewListener(s.httpLis, s.http.TLSConfig)
		}
	}
	switch s.cfg.DecisionLog {
	case "":
	case config.DecisionLogStderr:
		s.logFile = nopCloser{os.Stderr}
	default:
		if err := os.MkdirAll(filepath.Dir(s.cfg.DecisionLog), 0o755); err != nil {
			return fmt.Errorf("authz.decision_log: %w", err)
		}
		f, err := os.OpenFile(s.cfg.DecisionLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("authz.decision_log: %w", err)
		}
		s.logFile = f
	}
	return nil
}

// run serves until ctx ends.
func (s *authzService) run(ctx context.Context) error {
	// The decision log outlives the servers: it writes what the last
	// requests queued while the servers were draining.
	logDone := make(chan error, 1)
	logCtx, stopLog := context.WithCancel(context.Background())
	if s.decisions != nil {
		go func() { logDone <- s.decisions.Run(logCtx, s.logFile) }()
	} else {
		logDone <- nil
	}

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serveGRPC(ctx, s.grpc, s.lis) })
	if s.http != nil {
		g.Go(func() error { return serveHTTP(ctx, s.http, s.httpLis) })
	}
	g.Go(func() error { return s.reloader.Run(ctx) })
	err := g.Wait()
	stopLog()
	if logErr := <-logDone; err == nil && logErr != nil {
		err = fmt.Errorf("authz.decision_log: %w", logErr)
	}
	s.close()
	return err
}

func (s *authzService) addr() string { return s.lis.Addr().String() }

func (s *authzService) close() {
	for _, l := range []net.Listener{s.lis, s.httpLis} {
		if l != nil {
			l.Close()
		}
	}
	if s.logFile != nil {
		s.logFile.Close()
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// listenAuthz opens "host:port" or "unix:///path". A Unix socket gets mode
// 0777 like the workload socket: Envoys under any uid ask for decisions.
func listenAuthz(key, addr string) (net.Listener, error) {
	path, ok := strings.CutPrefix(addr, config.UnixPrefix)
	if !ok {
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		return lis, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if info, err := os.Lstat(path); err == nil {
		if info.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%s: %s exists and is not a socket; move it away", key, path)
		}
		if conn, err := net.Dial("unix", path); err == nil {
			conn.Close()
			return nil, fmt.Errorf("%s: %s is in use: is another meshid running?", key, path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("%s: remove stale socket: %w", key, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if err := os.Chmod(path, 0o777); err != nil {
		lis.Close()
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return lis, nil
}

// authorityJWTBundles is the JWT bundle source authz validates against:
// the CA's own bundle, once the CA is open, and the JWT keys of every
// federated trust domain. Authz serves the whole node, not one caller, so
// no entry's federates_with narrows the federated ones down.
type authorityJWTBundles struct {
	a atomic.Pointer[ca.Authority]
	// federated is set once before anything is served and only read after.
	federated *jwtbundle.Set
}

var errNoAuthority = errors.New("meshid's CA is not open yet")

func (b *authorityJWTBundles) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	a := b.a.Load()
	if a == nil {
		return nil, errNoAuthority
	}
	bundle := a.JWTBundle()
	if bundle.TrustDomain() == td {
		return bundle, nil
	}
	if b.federated != nil {
		if fb, ok := b.federated.Get(td); ok {
			return fb, nil
		}
	}
	return nil, fmt.Errorf("no JWT bundle for trust domain %q: neither meshid's own (%q) nor federated with JWT keys", td, bundle.TrustDomain())
}
