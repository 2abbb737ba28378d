// Package node builds and runs the meshid daemon of one node: it reads the
// configuration's inputs, opens the CA, starts the identity manager, and
// serves the workload socket (SDS, Workload API, health), the ext_authz
// listeners and the admin endpoint until its context ends. It is the only
// package that wires meshid's parts together; it never parses flags or
// prints for people (cmd/meshid does), and it holds no logic of the parts
// it wires.
//
// Build order is the dependency order, so nothing is bound late: inputs
// that are only read (entries, federated bundles, policies, attestor
// settings) → the CA, which writes data_dir → the identity manager → the
// servers → the listeners. A start refused for bad input leaves nothing
// behind on disk, and once a socket exists everything behind it is ready.
package node

import (
	"context"
	"errors"
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
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/vault"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/internal/buildinfo"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/internal/connlimit"
	"github.com/meshid/meshid/internal/gcfloor"
	"github.com/meshid/meshid/sds"
	"github.com/meshid/meshid/workload"
)

// shutdownGrace bounds how long in-flight calls may finish after SIGTERM.
// The agent's streams (SDS, Workload API) are ended at once instead: they
// never finish by themselves.
const shutdownGrace = 2 * time.Second

// LoadConfig reads meshid.yaml, or returns the built-in demo settings when
// path is empty.
func LoadConfig(path string) (config.Config, error) {
	if path == "" {
		cfg := config.Default()
		return cfg, cfg.Validate()
	}
	return config.Load(path)
}

// NewLogger is the daemon's logger as the log section asks for it.
func NewLogger(c config.Log, w io.Writer) (*slog.Logger, error) {
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

// Node is everything `meshid run` holds: built in full before anything is
// served, so a bad config, entries file or policy stops the start.
type Node struct {
	cfg   config.Config
	log   *slog.Logger
	reg   *prometheus.Registry // every part registers its metrics here
	ca    *ca.Authority
	ids   *identity.Manager
	ready atomic.Bool

	authz    *authzService
	sockets  socketLimits
	agent    *grpc.Server
	sds      *sds.Server      // for status: its open streams
	workload *workload.Server // for status: its open streams
	started  time.Time        // when New began, for status
	streams  *streamEnder     // ends agent's streams at shutdown
	agentLis net.Listener
	admin    *http.Server // public: health, readiness, metrics
	adminLis net.Listener
	private  *http.Server // root-only: what reveals other processes
	privLis  net.Listener
	fed      federationParts
}

// New builds the node from a validated configuration and opens its
// listeners; Run serves them.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*Node, error) {
	started := time.Now()
	in, err := readInputs(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: log, reg: prometheus.NewRegistry(), sockets: in.sockets, started: started}
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildinfo.Collector(buildinfo.Read()))

	caOpts, err := caOptions(cfg, in.trustDomain, log, n.reg)
	if err != nil {
		return nil, err
	}
	if n.ca, err = ca.Open(caOpts); err != nil {
		return nil, err
	}
	// Fetchers start from what they stored, so they come before the
	// identities that hand those bundles out.
	updateFederated := func(b *spiffebundle.Bundle) { n.ids.SetFederatedBundle(b) }
	if n.fed.fetchers, err = newFetchers(cfg, in.federated, n.ca, updateFederated, log, n.reg); err != nil {
		return nil, err
	}
	n.ids = identity.NewManager(identity.Options{
		Entries:       in.entries,
		DefaultTTL:    cfg.SVID.X509TTL,
		DefaultJWTTTL: cfg.SVID.JWTTTL,
		Minter:        n.ca,
		Attestor:      in.attestor,
		Log:           log,
		EntriesFile:   cfg.EntriesFile,
		TrustDomain:   in.trustDomain,
		Metrics:       n.reg,
		Federated:     in.federated,
	})
	if n.fed.endpoint, err = newBundleEndpoint(cfg, in.trustDomain, n.ca, n.ids, log); err != nil {
		return nil, err
	}
	if n.authz, err = newAuthzService(cfg.Authz, cfg.DataDir, in.policies, n.authzIdentity(in.policies), in.sockets.authz, log, n.reg); err != nil {
		return nil, err
	}

	n.streams = newStreamEnder()
	agentMetrics := newGRPCMetrics(n.reg, "agent")
	// The metrics interceptors come first, so that a stream ended at
	// shutdown is counted with the code it ended with.
	n.agent = grpc.NewServer(append(agentServerOptions(cfg.Limits), append(agentMetrics.options(), grpc.ChainStreamInterceptor(n.streams.interceptor()))...)...)
	n.sds = sds.New(sds.Options{Identities: sdsIdentities{n.ids}, Log: log, Registerer: n.reg})
	n.sds.Register(n.agent)
	n.workload = workload.New(workload.Options{Identities: workloadIdentities{n.ids}, Log: log, Registerer: n.reg})
	n.workload.Register(n.agent)
	healthpb.RegisterHealthServer(n.agent, health.NewServer())
	agentMetrics.init(n.agent)

	n.admin = &http.Server{Handler: n.adminHandler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: cfg.Limits.IdleTimeout}
	n.private = &http.Server{Handler: n.privateHandler(), ReadHeaderTimeout: 5 * time.Second}

	if err := n.listen(); err != nil {
		return nil, err
	}
	return n, nil
}

// inputs are what the configuration points at that meshid only reads.
type inputs struct {
	trustDomain spiffeid.TrustDomain
	entries     []identity.Entry
	federated   *spiffebundle.Set
	policies    policies
	attestor    *attestor.Attestor
	sockets     socketLimits // the workload socket's connection caps
}

// readInputs reads and checks every input before anything is written.
func readInputs(ctx context.Context, cfg config.Config, log *slog.Logger) (inputs, error) {
	var in inputs
	var err error
	if in.trustDomain, err = spiffeid.TrustDomainFromString(cfg.TrustDomain); err != nil {
		return in, err // config validation already said where
	}
	in.entries, err = identity.LoadEntries(cfg.EntriesFile, in.trustDomain)
	switch {
	case errors.Is(err, fs.ErrNotExist) && cfg.EntriesOptional:
		log.Warn("no entries file: no workload will get an identity until one exists", "entries_file", cfg.EntriesFile)
	case err != nil:
		return in, err
	}
	if in.federated, err = loadFederation(cfg.Federation); err != nil {
		return in, err
	}
	if err := identity.CheckFederation(in.entries, in.federated); err != nil {
		return in, err
	}
	withJWT := 0
	for _, b := range in.federated.Bundles() {
		log.Info("federated trust domain loaded", "trust_domain", b.TrustDomain().Name(),
			"x509_roots", len(b.X509Authorities()), "jwt_keys", len(b.JWTAuthorities()))
		if len(b.JWTAuthorities()) > 0 {
			withJWT++
		}
	}
	if withJWT > 0 && len(cfg.Authz.JWTAudiences) > 0 {
		log.Info("authz: JWT-SVIDs of federated trust domains are validated against their JWT keys too", "trust_domains", withJWT)
	}
	if in.policies, err = compilePolicies(ctx, cfg.Authz, log); err != nil {
		return in, err
	}
	if in.attestor, err = newAttestor(cfg); err != nil {
		return in, err
	}
	if d := cfg.Docker; d != nil {
		if err := attestor.PingDocker(ctx, dockerOptions(*d)); err != nil {
			return in, fmt.Errorf("docker.socket_path: %w", err)
		}
	}
	if in.sockets, err = budgetSockets(cfg.Limits, log); err != nil {
		return in, err
	}
	return in, nil
}

// caOptions maps the ca section to the CA's options.
func caOptions(cfg config.Config, td spiffeid.TrustDomain, log *slog.Logger, reg prometheus.Registerer) (ca.Options, error) {
	o := ca.Options{TrustDomain: td, Dir: cfg.DataDir, TTL: cfg.CA.TTL, Log: log, Metrics: reg}
	switch u := cfg.CA.Upstream; {
	case u == nil:
	case u.Vault != nil:
		ua, err := vaultUpstream(*u.Vault)
		if err != nil {
			return o, err
		}
		o.UpstreamAuthority, o.RootsRefresh = ua, u.Vault.RootsRefresh
	default:
		o.Upstream = &ca.Upstream{CertFile: u.CertFile, KeyFile: u.KeyFile, BundleFile: u.BundleFile}
	}
	return o, nil
}

// vaultUpstream maps ca.upstream.vault to the engine's client.
func vaultUpstream(v config.Vault) (*vault.Client, error) {
	o := vault.Options{Address: v.Address, PKIMount: v.PKIMount, CAFile: v.CAFile, Namespace: v.Namespace, TokenFile: v.TokenFile}
	if a := v.AppRole; a != nil {
		o.AppRole = &vault.AppRole{RoleIDFile: a.RoleIDFile, SecretIDFile: a.SecretIDFile, Mount: a.Mount}
	}
	if k := v.Kubernetes; k != nil {
		o.Kubernetes = &vault.Kubernetes{Role: k.Role, TokenFile: k.TokenFile, Mount: k.Mount}
	}
	return vault.New(o)
}

// authzIdentity is what authz needs of meshid's identities: the keys to
// validate JWT-SVIDs with (the node's own and every federated domain's)
// and, with authz.tls, meshid's own SVID.
func (n *Node) authzIdentity(p policies) authzIdentity {
	id := authzIdentity{jwtBundles: n.ids}
	if p.selfID != (spiffeid.ID{}) {
		id.self = n.ids.Self(p.selfID, n.cfg.SVID.X509TTL)
	}
	return id
}

// listen opens every listener, or none: once a socket exists, clients may
// use it.
func (n *Node) listen() (err error) {
	if n.agentLis, err = n.listenAgent(n.sockets); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			n.agentLis.Close()
		}
	}()
	if err = n.authz.listen(); err != nil {
		return err
	}
	if n.adminLis, err = listenCapped("admin.address", n.cfg.Admin.Address, connlimit.AdminCap); err != nil {
		n.authz.close()
		return err
	}
	if n.privLis, err = listenPrivate("admin.socket_path", n.cfg.AdminSocketPath()); err != nil {
		n.authz.close()
		n.adminLis.Close()
		return err
	}
	if err = n.fed.listen(n.cfg.Federation); err != nil {
		n.authz.close()
		n.adminLis.Close()
		n.privLis.Close()
		return err
	}
	return nil
}

// Run serves until ctx ends or a part fails, then stops every part.
func (n *Node) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	// SDS and Workload API streams never end by themselves: end them as
	// soon as meshid stops, so that GracefulStop need not wait them out.
	defer context.AfterFunc(ctx, n.streams.End)()
	g.Go(func() error { return n.ca.Run(ctx) })
	g.Go(func() error { return n.ids.Run(ctx) })
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	g.Go(func() error { return n.ids.WatchEntries(ctx, hup) })
	g.Go(func() error { return serveGRPC(ctx, n.agent, n.agentLis) })
	g.Go(func() error { return n.authz.run(ctx) })
	g.Go(func() error { return serveHTTP(ctx, n.admin, n.adminLis) })
	g.Go(func() error { return serveHTTP(ctx, n.private, n.privLis) })
	g.Go(func() error { return n.fed.run(ctx) })
	g.Go(func() error {
		gcfloor.Run(ctx, gcfloor.DefaultFloor, n.log)
		return nil
	})
	n.ready.Store(true)
	n.log.Info("meshid ready",
		"trust_domain", n.cfg.TrustDomain,
		"socket", n.cfg.SocketPath,
		"authz", n.authz.addr(),
		"admin", n.adminLis.Addr().String(),
		"admin_socket", n.privLis.Addr().String(),
		"bundle_endpoint", n.fed.addr(),
		"federation_endpoints", len(n.fed.fetchers))
	err := g.Wait()
	n.log.Info("meshid stopped")
	return err
}
