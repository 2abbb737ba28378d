package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/internal/gcfloor"
	"github.com/meshid/meshid/sds"
	"github.com/meshid/meshid/workload"
)

// shutdownGrace bounds how long in-flight calls may finish after SIGTERM.
// The agent's streams (SDS, Workload API) are ended at once instead: they
// never finish by themselves.
const shutdownGrace = 2 * time.Second

func run(ctx context.Context, args []string, stderr io.Writer) error {
	flags := flag.NewFlagSet("run", flag.ContinueOnError)
	flags.SetOutput(stderr)
	configPath := flags.String("config", "", "path to meshid.yaml (default: built-in demo settings in the current directory)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		return err
	}
	log, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	d, err := newDaemon(ctx, cfg, log)
	if err != nil {
		return err
	}
	return d.run(ctx)
}

func loadConfig(path string) (config.Config, error) {
	if path == "" {
		cfg := config.Default()
		return cfg, cfg.Validate()
	}
	return config.Load(path)
}

func newLogger(c config.Log, w io.Writer) (*slog.Logger, error) {
	level, err := c.SlogLevel()
	if err != nil {
		return nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return slog.New(slog.NewTextHandler(w, opts)), nil
}

// daemon is everything `meshid run` holds: built in full before anything
// is served, so a bad config, entries file or policy stops the start.
type daemon struct {
	cfg   config.Config
	log   *slog.Logger
	reg   *prometheus.Registry // every part registers its metrics here
	ids   *identity.Manager
	ready atomic.Bool

	authz    *authzService
	agent    *grpc.Server
	streams  *streamEnder // ends agent's streams at shutdown
	agentLis net.Listener
	admin    *http.Server
	adminLis net.Listener
}

func newDaemon(ctx context.Context, cfg config.Config, log *slog.Logger) (*daemon, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, err // config validation already said where
	}
	entries, err := identity.LoadEntries(cfg.EntriesFile, td)
	switch {
	case errors.Is(err, fs.ErrNotExist) && cfg.EntriesOptional:
		log.Warn("no entries file: no workload will get an identity until one exists", "entries_file", cfg.EntriesFile)
	case err != nil:
		return nil, err
	}
	federated, err := loadFederation(cfg.Federation)
	if err != nil {
		return nil, err
	}
	if err := identity.CheckFederation(entries, federated); err != nil {
		return nil, err
	}
	for _, b := range federated.Bundles() {
		log.Info("federated trust domain loaded", "trust_domain", b.TrustDomain().Name(),
			"x509_roots", len(b.X509Authorities()), "jwt_keys", len(b.JWTAuthorities()))
	}
	reg := prometheus.NewRegistry()
	authzSvc, err := newAuthzService(ctx, cfg.Authz, cfg.SVID.X509TTL, log, reg)
	if err != nil {
		return nil, err
	}
	att, err := newAttestor(cfg)
	if err != nil {
		return nil, err
	}
	// The CA comes after everything that only reads input, so a start
	// refused for bad input leaves nothing behind on disk.
	caOpts := ca.Options{TrustDomain: td, Dir: cfg.DataDir, TTL: cfg.CA.TTL, Log: log}
	if u := cfg.CA.Upstream; u != nil {
		caOpts.Upstream = &ca.Upstream{CertFile: u.CertFile, KeyFile: u.KeyFile, BundleFile: u.BundleFile}
	}
	authority, err := ca.Open(caOpts)
	if err != nil {
		return nil, err
	}
	authzSvc.jwt.federated = federatedJWTBundles(federated)
	if n := authzSvc.jwt.federated.Len(); n > 0 && len(cfg.Authz.JWTAudiences) > 0 {
		log.Info("authz: JWT-SVIDs of federated trust domains are validated against their JWT keys too", "trust_domains", n)
	}
	authzSvc.useAuthority(authority)

	d := &daemon{cfg: cfg, log: log, authz: authzSvc, reg: reg}
	d.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.ids = identity.NewManager(identity.Options{
		Entries:       entries,
		DefaultTTL:    cfg.SVID.X509TTL,
		DefaultJWTTTL: cfg.SVID.JWTTTL,
		Minter:        authority,
		Attestor:      att,
		Log:           log,
		EntriesFile:   cfg.EntriesFile,
		TrustDomain:   td,
		Metrics:       d.reg,
		Federated:     federated,
	})

	d.streams = newStreamEnder()
	d.agent = grpc.NewServer(grpc.Creds(attestor.PeerCredentials()), grpc.StreamInterceptor(d.streams.interceptor()))
	sds.New(sds.Options{Identities: sdsIdentities{d.ids}, Log: log, Registerer: d.reg}).Register(d.agent)
	workload.New(workloadIdentities{d.ids}, log).Register(d.agent)
	healthpb.RegisterHealthServer(d.agent, health.NewServer())

	d.admin = &http.Server{Handler: d.adminHandler(), ReadHeaderTimeout: 5 * time.Second}

	// Listen last: once a socket exists, clients may use it.
	if d.agentLis, err = listenWorkloadSocket(cfg.SocketPath); err != nil {
		return nil, err
	}
	if err = d.authz.listen(); err != nil {
		d.agentLis.Close()
		return nil, err
	}
	if d.adminLis, err = net.Listen("tcp", cfg.Admin.Address); err != nil {
		d.agentLis.Close()
		d.authz.close()
		return nil, fmt.Errorf("admin.address: %w", err)
	}
	return d, nil
}

// run serves until ctx ends or a part fails, then stops every part.
func (d *daemon) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	// SDS and Workload API streams never end by themselves: end them as
	// soon as meshid stops, so that GracefulStop need not wait them out.
	defer context.AfterFunc(ctx, d.streams.End)()
	g.Go(func() error { return d.ids.Run(ctx) })
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	g.Go(func() error { return d.ids.WatchEntries(ctx, hup) })
	g.Go(func() error { return serveGRPC(ctx, d.agent, d.agentLis) })
	g.Go(func() error { return d.authz.run(ctx) })
	g.Go(func() error { return serveHTTP(ctx, d.admin, d.adminLis) })
	g.Go(func() error {
		gcfloor.Run(ctx, gcfloor.DefaultFloor, d.log)
		return nil
	})
	d.ready.Store(true)
	d.log.Info("meshid ready",
		"trust_domain", d.cfg.TrustDomain,
		"socket", d.cfg.SocketPath,
		"authz", d.authz.addr(),
		"admin", d.adminLis.Addr().String())
	err := g.Wait()
	d.log.Info("meshid stopped")
	return err
}

// serveGRPC serves srv on lis until ctx ends, then gives in-flight calls
// shutdownGrace to finish before cutting them.
func serveGRPC(ctx context.Context, srv *grpc.Server, lis net.Listener) error {
	return serveUntil(ctx, func() error { return srv.Serve(lis) }, func() {
		stopped := make(chan struct{})
		go func() {
			srv.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(shutdownGrace):
			srv.Stop()
			<-stopped
		}
	})
}

// serveHTTP is serveGRPC for the admin endpoint.
func serveHTTP(ctx context.Context, srv *http.Server, lis net.Listener) error {
	serve := func() error {
		if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	return serveUntil(ctx, serve, func() {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil {
			srv.Close()
		}
	})
}

// serveUntil runs serve until it fails or ctx ends; then it calls stop,
// which must make serve return, and returns serve's result.
func serveUntil(ctx context.Context, serve func() error, stop func()) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stop()
	return <-errc
}

func (d *daemon) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}))
	mux.Handle("GET /explain", explainHandler(d.ids))
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}

// sdsIdentities adapts the identity manager to the interface sds declares.
type sdsIdentities struct{ m *identity.Manager }

func (a sdsIdentities) Watch(ctx context.Context) (sds.Subscription, error) {
	sub, err := a.m.Watch(ctx)
	if err != nil {
		return nil, err
	}
	return sub, nil
}
