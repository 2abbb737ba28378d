package node

import (
	"context"
	"fmt"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/bundles"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/internal/config"
)

// Decide decides one CheckRequest with the configuration cfg as `meshid
// run` would: the same engine settings and server options (AuthzSettings),
// and JWT-SVIDs validated against the keys a node running on cfg's
// data_dir signs with and the federated trust domains' (EvalJWTBundles).
// Nothing is logged or counted. It is `meshid policy eval`.
func Decide(ctx context.Context, cfg config.Config, req *authv3.CheckRequest) (*authz.Result, error) {
	engineCfg, opts, err := AuthzSettings(cfg.Authz, nil)
	if err != nil {
		return nil, err
	}
	if engineCfg.Bundles, err = KeptBundles(cfg.Authz, cfg.DataDir); err != nil {
		return nil, err
	}
	e, err := authz.NewEngine(ctx, engineCfg)
	if err != nil {
		return nil, err
	}
	if len(cfg.Authz.JWTAudiences) > 0 {
		if opts.Input.JWTBundles, err = EvalJWTBundles(cfg); err != nil {
			return nil, err
		}
	}
	srv, err := authz.NewServer(e, opts)
	if err != nil {
		return nil, err
	}
	return srv.Decide(ctx, req), nil
}

// KeptBundles are the copies of authz.bundles a node on dataDir keeps,
// verified as it verifies them at start: what it decides with when the
// bundle service is down. Every bundle must have one.
func KeptBundles(c config.Authz, dataDir string) ([]authz.Bundle, error) {
	version := ast.RegoV1
	if c.RegoVersion == "v0" {
		version = ast.RegoV0
	}
	var out []authz.Bundle
	for _, b := range c.Bundles {
		kept, err := bundles.ReadKept(b, dataDir, version)
		if err != nil {
			return nil, fmt.Errorf("authz.bundles: %w", err)
		}
		out = append(out, kept)
	}
	return out, nil
}

// EvalJWTBundles are the JWT keys `meshid run` validates JWT-SVIDs with,
// read without a running node: its own trust domain's from the CA in
// data_dir (none yet: an empty bundle, against which every JWT-SVID is
// invalid, as it would be) and the federated ones from their bundle files.
func EvalJWTBundles(cfg config.Config) (jwtbundle.Source, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("trust_domain: %w", err)
	}
	root := ca.RootSelfSigned
	switch u := cfg.CA.Upstream; {
	case u == nil:
	case u.Vault != nil:
		root = ca.RootUpstreamAuthority
	default:
		root = ca.RootUpstreamFiles
	}
	own, err := ca.ReadJWTBundle(cfg.DataDir, td, root)
	if err != nil {
		return nil, fmt.Errorf("the JWT keys of the CA in data_dir %s: %w", cfg.DataDir, err)
	}
	set := jwtbundle.NewSet(own)
	federated, err := loadFederation(cfg.Federation)
	if err != nil {
		return nil, err
	}
	for _, b := range federated.Bundles() {
		if b.TrustDomain() != td && len(b.JWTAuthorities()) > 0 {
			set.Add(jwtbundle.FromJWTAuthorities(b.TrustDomain(), b.JWTAuthorities()))
		}
	}
	return set, nil
}
