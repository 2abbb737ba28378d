package node

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sync/errgroup"

	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/federation"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/internal/connlimit"
)

// loadFederation reads the federated trust domains' bundle files. A domain
// fetched from its endpoint alone starts with an empty bundle: configured,
// so entries may federate with it, but nothing is handed out for it until
// the first fetch (or what an earlier one stored, see startFederation).
func loadFederation(cfg config.Federation) (*spiffebundle.Set, error) {
	set := spiffebundle.NewSet()
	for i, b := range cfg.Bundles {
		td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
		if err != nil {
			return nil, err // config validation already said where
		}
		if b.BundleFile == "" {
			set.Add(spiffebundle.New(td))
			continue
		}
		bundle, err := identity.ReadBundleFile(td, b.BundleFile)
		if err != nil {
			return nil, fmt.Errorf("federation.bundles[%d] (%s): %s: %w", i, b.TrustDomain, b.BundleFile, err)
		}
		set.Add(bundle)
	}
	return set, nil
}

// federationDir is where fetched bundles and the endpoint's sequence live.
func federationDir(cfg config.Config) string { return filepath.Join(cfg.DataDir, "federation") }

// federationParts are the bundle endpoint and the fetchers of a node.
type federationParts struct {
	fetchers []*federation.Fetcher
	endpoint *federation.Endpoint
	lis      net.Listener
}

// newFetchers makes one fetcher per federated domain with an endpoint_url
// and puts what each starts from (stored, else the bundle file) into set,
// the node's starting federated bundles. Each hands its refreshed bundles
// to update.
func newFetchers(cfg config.Config, set *spiffebundle.Set, own *ca.Authority, update func(*spiffebundle.Bundle), log *slog.Logger, reg prometheus.Registerer) ([]*federation.Fetcher, error) {
	var domains []spiffeid.TrustDomain
	for _, b := range cfg.Federation.Bundles {
		if b.EndpointURL != "" {
			domains = append(domains, spiffeid.RequireTrustDomainFromString(b.TrustDomain))
		}
	}
	if len(domains) == 0 {
		return nil, nil
	}
	if err := os.MkdirAll(federationDir(cfg), 0o700); err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	metrics := federation.NewMetrics(reg, domains)
	var fetchers []*federation.Fetcher
	for i, b := range cfg.Federation.Bundles {
		if b.EndpointURL == "" {
			continue
		}
		td := spiffeid.RequireTrustDomainFromString(b.TrustDomain)
		o := federation.FetchOptions{
			TrustDomain: td,
			URL:         b.EndpointURL,
			StoreFile:   filepath.Join(federationDir(cfg), td.Name()+".json"),
			Own:         own,
			Log:         log,
			Metrics:     metrics,
		}
		if bootstrap, ok := set.Get(td); ok && !bootstrap.Empty() {
			o.Bootstrap = bootstrap
		}
		if b.EndpointSPIFFEID != "" {
			o.EndpointID = spiffeid.RequireFromString(b.EndpointSPIFFEID)
		}
		if b.EndpointCAFile != "" {
			roots, err := readRoots(b.EndpointCAFile)
			if err != nil {
				return nil, fmt.Errorf("federation.bundles[%d].endpoint_ca_file: %w", i, err)
			}
			o.WebRoots = roots
		}
		f, err := federation.NewFetcher(o, update)
		if err != nil {
			return nil, fmt.Errorf("federation.bundles[%d]: %w", i, err)
		}
		if start := f.Current(); start != nil {
			set.Add(start)
		}
		fetchers = append(fetchers, f)
	}
	return fetchers, nil
}

func readRoots(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// newBundleEndpoint builds federation.bundle_endpoint, or nothing when it
// is not configured.
func newBundleEndpoint(cfg config.Config, td spiffeid.TrustDomain, own *ca.Authority, ids *identity.Manager, log *slog.Logger) (*federation.Endpoint, error) {
	e := cfg.Federation.BundleEndpoint
	if e == nil {
		return nil, nil
	}
	if err := os.MkdirAll(federationDir(cfg), 0o700); err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	o := federation.EndpointOptions{
		TrustDomain: td,
		Source:      own,
		RefreshHint: e.RefreshHint,
		StateFile:   filepath.Join(federationDir(cfg), "endpoint.json"),
		Log:         log,
	}
	switch e.Profile {
	case config.ProfileWeb:
		o.CertFile, o.KeyFile = e.CertFile, e.KeyFile
	default:
		id := spiffeid.RequireFromPath(td, "/meshid")
		if e.SPIFFEID != "" {
			id = spiffeid.RequireFromString(e.SPIFFEID)
		}
		o.SVID = ids.Self(id, cfg.SVID.X509TTL)
	}
	endpoint, err := federation.NewEndpoint(o)
	if err != nil {
		return nil, fmt.Errorf("federation.bundle_endpoint: %w", err)
	}
	return endpoint, nil
}

func (f *federationParts) listen(cfg config.Federation) (err error) {
	if f.endpoint == nil {
		return nil
	}
	f.lis, err = listenCapped("federation.bundle_endpoint.address", cfg.BundleEndpoint.Address, connlimit.AdminCap)
	return err
}

// addr is the bundle endpoint's address, "" without one.
func (f *federationParts) addr() string {
	if f.lis == nil {
		return ""
	}
	return f.lis.Addr().String()
}

// run serves the endpoint and runs the fetchers until ctx ends.
func (f *federationParts) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	if f.endpoint != nil {
		g.Go(func() error { return f.endpoint.Serve(ctx, f.lis) })
	}
	for _, fetcher := range f.fetchers {
		g.Go(func() error { return fetcher.Run(ctx) })
	}
	if err := g.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
