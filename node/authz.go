package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/bundles"
	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/authz/input"
	"github.com/meshid/meshid/identity"
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
	http      *http.Server     // nil unless authz.http_address is set
	reloader  *authz.Reloader  // nil with bundles and no policy dir
	bundles   *bundles.Manager // nil unless authz.bundles are set
	decisions *decisionlog.Log // nil unless authz.decision_log is set

	conns        tcpLimits
	lis, httpLis net.Listener
	logFile      io.WriteCloser
}

// policies is the read-only part of authz, checked before anything is
// written: the compiled policy set, the server options (with the proto
// descriptors gRPC bodies are decoded with), and the SPIFFE ID authz.tls
// asks meshid to present.
type policies struct {
	engineCfg authz.Config
	engine    *authz.Engine // nil with bundles: they are activated later
	opts      authz.Options
	selfID    spiffeid.ID // zero unless authz.tls.spiffe_id is set
}

// AuthzSettings maps the authz section to the policy engine's settings and
// the decision server's options, reading the proto descriptors it names:
// the one mapping `meshid run` and `meshid policy eval` share, so that both
// decide alike. The keys JWT-SVIDs are validated with (Input.JWTBundles)
// are the caller's to add: the CA's as it runs, or as policy eval reads
// them from data_dir (EvalJWTBundles); so is what only a running node has
// (the decision log, metrics).
func AuthzSettings(c config.Authz, log *slog.Logger) (authz.Config, authz.Options, error) {
	engine := authz.Config{
		PolicyDir:   c.PolicyDir,
		Decision:    c.Decision,
		EvalTimeout: c.EvalTimeout,
		RegoV0:      c.RegoVersion == "v0",
	}
	opts := authz.Options{
		Log:        log,
		DenyStatus: c.DenyStatus,
		DryRun:     c.DryRun,
		Input: input.Options{
			TrustXFCC:    c.XFCC.Trust,
			XFCCProxies:  c.XFCC.Proxies,
			JWTAudiences: c.JWTAudiences,
			Body:         input.BodyLimits{MaxBytes: c.MaxBodyBytes, MaxDepth: c.MaxBodyDepth, MaxValues: c.MaxBodyValues},
			Encoding:     input.Encoding(c.InputEncoding),
		},
		Cache: authz.CacheOptions{Enabled: c.Cache.Enabled, MaxEntries: c.Cache.MaxEntries, MaxBytes: c.Cache.MaxBytes},
	}
	if c.ProtoDescriptor != "" {
		var err error
		if opts.Input.ProtoDescriptors, err = input.LoadProtoDescriptors(c.ProtoDescriptor); err != nil {
			return engine, opts, fmt.Errorf("authz.proto_descriptor: %w", err)
		}
	}
	return engine, opts, nil
}

func compilePolicies(ctx context.Context, cfg config.Authz, log *slog.Logger) (policies, error) {
	var p policies
	var err error
	if p.engineCfg, p.opts, err = AuthzSettings(cfg, log); err != nil {
		return p, err
	}
	if len(cfg.Bundles) > 0 {
		if err := bundles.Check(cfg.Bundles); err != nil {
			return p, err
		}
		// The decision may be a bundle's: the dir is only checked here,
		// and compiled with the bundles once they are there.
		if cfg.PolicyDir != "" {
			if err := authz.CheckPolicyDir(ctx, p.engineCfg); err != nil {
				return p, fmt.Errorf("authz.policy_dir: %w", err)
			}
		}
	} else if p.engine, err = authz.NewEngine(ctx, p.engineCfg); err != nil {
		return p, fmt.Errorf("authz.policy_dir: %w", err)
	}
	if cfg.TLS.SPIFFEID != "" {
		if p.selfID, err = spiffeid.FromString(cfg.TLS.SPIFFEID); err != nil {
			return p, fmt.Errorf("authz.tls.spiffe_id: %w", err)
		}
	}
	return p, nil
}

// authzIdentity is what authz takes from meshid's identities.
type authzIdentity struct {
	jwtBundles jwtbundle.Source   // JWT-SVIDs of the node's callers validate against it
	self       *identity.SelfSVID // nil unless authz.tls.spiffe_id is set
}

// RevisionsDir is where, in data_dir, the policy sets of logged decisions
// are kept for `meshid policy why` (decisionlog.Revisions).
func RevisionsDir(dataDir string) string { return filepath.Join(dataDir, "policies") }

// newAuthzService builds the servers over compiled policies; it opens no
// socket or file yet, so a start refused for other reasons leaves nothing
// to clean up.
func newAuthzService(cfg config.Authz, dataDir string, p policies, id authzIdentity, conns tcpLimits, log *slog.Logger, reg prometheus.Registerer) (*authzService, error) {
	s := &authzService{cfg: cfg, log: log, conns: conns}
	var err error
	if s.decisions, err = newDecisionLog(cfg, dataDir, log, reg); err != nil {
		return nil, err
	}
	opts := p.opts
	opts.Input.JWTBundles = id.jwtBundles
	opts.DecisionLog = s.decisions
	opts.ExplainDenials = cfg.DecisionLogExplain == config.DecisionLogExplainDeny
	opts.Metrics = reg
	if s.srv, err = authz.NewServer(p.engine, opts); err != nil {
		return nil, fmt.Errorf("authz: %w", err)
	}
	if len(cfg.Bundles) == 0 {
		s.reloader = authz.NewReloader(s.srv, p.engineCfg, cfg.ReloadInterval, log)
	} else if err := s.newBundles(cfg, dataDir, p, reg); err != nil {
		return nil, err
	}

	tlsCfg, err := authzTLSConfig(cfg.TLS, id.self)
	if err != nil {
		return nil, err
	}
	// Envoy keeps its ext_authz connections busy; one without a call for
	// the idle timeout holds a capped place for nothing.
	grpcOpts := []grpc.ServerOption{grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: conns.idle})}
	if tlsCfg != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(tlsCfg)))
		log.Info("authz: serving mutual TLS with meshid's own SVID", "spiffe_id", id.self.ID(), "client_ids", cfg.TLS.ClientIDs)
	}
	grpcMetrics := newGRPCMetrics(reg, "authz")
	s.grpc = grpc.NewServer(append(grpcOpts, grpcMetrics.options()...)...)
	s.srv.Register(s.grpc)
	healthpb.RegisterHealthServer(s.grpc, health.NewServer())
	if cfg.Reflection {
		reflection.Register(s.grpc)
	}
	grpcMetrics.init(s.grpc)
	if cfg.HTTPAddress != "" {
		s.http = &http.Server{
			Handler:           s.srv.HTTPHandler(),
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       conns.idle,
			TLSConfig:         tlsCfg,
			// Refused handshakes and broken requests are the operator's
			// to see, in meshid's log rather than on bare stderr.
			ErrorLog: slog.NewLogLogger(log.With("server", "authz.http_address").Handler(), slog.LevelWarn),
		}
	}
	if len(cfg.JWTAudiences) > 0 {
		log.Info("authz: JWT-SVIDs are validated against the CA's JWT bundle", "audiences", cfg.JWTAudiences)
	}
	if cfg.DryRun {
		log.Warn("authz: dry run: every request is allowed; the decision log and the debug log say what the policy decided")
	}
	return s, nil
}

// listen opens the listeners and the decision log file, which rotates by
// size; stderr is the operator's to rotate (or journald's), never
// meshid's.
func (s *authzService) listen() (err error) {
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.lis, err = listenCapped("authz.address", s.cfg.Address, s.conns.max); err != nil {
		return err
	}
	if s.http != nil {
		if s.httpLis, err = listenCapped("authz.http_address", s.cfg.HTTPAddress, s.conns.max); err != nil {
			return err
		}
		if s.http.TLSConfig != nil {
			s.httpLis = tls.NewListener(s.httpLis, s.http.TLSConfig)
		}
	}
	switch file := s.cfg.DecisionLog.File; file {
	case "":
	case config.DecisionLogStderr:
		s.logFile = nopCloser{os.Stderr}
	default:
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return fmt.Errorf("authz.decision_log: %w", err)
		}
		f, err := decisionlog.OpenFile(file, decisionlog.FileOptions{
			MaxBytes: s.cfg.DecisionLogMaxBytes,
			MaxFiles: s.cfg.DecisionLogMaxFiles,
			Log:      s.log,
		})
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
	if s.reloader != nil {
		g.Go(func() error { return s.reloader.Run(ctx) })
	}
	if s.bundles != nil {
		g.Go(func() error { return s.bundles.Run(ctx) })
	}
	err := g.Wait()
	stopLog()
	if logErr := <-logDone; err == nil && logErr != nil {
		err = fmt.Errorf("authz.decision_log: %w", logErr)
	}
	s.close()
	return err
}

// newBundles sets up authz.bundles: the activator the policy dir and the
// bundles meet in, and the bundles' manager, which activates the copies
// kept in data_dir now, so that a node that restarts while the bundle
// service is down decides from its first request.
func (s *authzService) newBundles(cfg config.Authz, dataDir string, p policies, reg prometheus.Registerer) error {
	names := make([]string, 0, len(cfg.Bundles))
	for _, b := range cfg.Bundles {
		names = append(names, b.Name)
	}
	act, err := authz.NewActivator(s.srv, p.engineCfg, names, s.log)
	if err != nil {
		return fmt.Errorf("authz.policy_dir: %w", err)
	}
	if cfg.PolicyDir != "" {
		s.reloader = act.Reloader(cfg.ReloadInterval, s.log)
	}
	version := ast.RegoV1
	if p.engineCfg.RegoV0 {
		version = ast.RegoV0
	}
	if s.bundles, err = bundles.New(bundles.Options{
		Bundles: cfg.Bundles, DataDir: dataDir, RegoVersion: version, Activator: act, Log: s.log, Metrics: reg,
	}); err != nil {
		return err
	}
	s.bundles.LoadKept(context.Background())
	if pending := act.Pending(); len(pending) > 0 {
		s.log.Warn("authz: no policy in force until every bundle is downloaded: every request is denied", "waiting_for", pending)
	}
	return nil
}

// ready says why authz cannot decide yet: a bundle without a copy.
func (s *authzService) ready() error {
	if s.bundles == nil {
		return nil
	}
	return s.bundles.Ready()
}

// bundleStatus is the state of each bundle; nil without bundles.
func (s *authzService) bundleStatus() []bundles.Status {
	if s.bundles == nil {
		return nil
	}
	return s.bundles.Status()
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
