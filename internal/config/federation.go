package config

import "github.com/spiffe/go-spiffe/v2/spiffeid"

// Federation names the bundles of other trust domains this node's
// workloads may validate peers of (entries opt in with federates_with).
type Federation struct {
	Bundles []FederatedBundle `yaml:"bundles"`
}

// FederatedBundle is one other trust domain's bundle, from a file: PEM
// X.509 roots, or a SPIFFE bundle (JWKS) with X.509 roots, JWT keys or
// both. The file's content is read, and its format told, when meshid
// starts (cmd/meshid's loadFederation), not here.
type FederatedBundle struct {
	TrustDomain string `yaml:"trust_domain"`
	BundleFile  string `yaml:"bundle_file"`
}

func (f *Federation) paths() []*string {
	paths := make([]*string, len(f.Bundles))
	for i := range f.Bundles {
		paths[i] = &f.Bundles[i].BundleFile
	}
	return paths
}

func (f Federation) validate(own string, bad func(path []any, format string, args ...any)) {
	seen := map[string]bool{}
	for i, b := range f.Bundles {
		at := func(key string) []any { return []any{"federation", "bundles", i, key} }
		td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
		switch {
		case err != nil:
			bad(at("trust_domain"), "federation.bundles[%d].trust_domain %q: %v", i, b.TrustDomain, err)
		case td.Name() == own:
			bad(at("trust_domain"), "federation.bundles[%d].trust_domain %q is this node's own trust domain", i, b.TrustDomain)
		case seen[td.Name()]:
			bad(at("trust_domain"), "federation.bundles[%d].trust_domain %q is listed twice", i, b.TrustDomain)
		default:
			seen[td.Name()] = true
		}
		if b.BundleFile == "" {
			bad(at("bundle_file"), "federation.bundles[%d].bundle_file is required", i)
		}
	}
}
