package config

import (
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Federation is how this node's workloads come to trust other trust
// domains (entries opt in with federates_with), and how other trust
// domains come to trust this one.
type Federation struct {
	// BundleEndpoint, if set, serves this trust domain's SPIFFE bundle.
	BundleEndpoint *BundleEndpoint   `yaml:"bundle_endpoint"`
	Bundles        []FederatedBundle `yaml:"bundles"`
}

// The SPIFFE bundle endpoint profiles.
const (
	ProfileSPIFFE = "https_spiffe" // TLS with meshid's own SVID
	ProfileWeb    = "https_web"    // TLS with a web PKI certificate
)

// BundleEndpoint serves this trust domain's bundle over HTTPS.
type BundleEndpoint struct {
	Address string `yaml:"address"`
	// Profile is https_spiffe (default) or https_web.
	Profile string `yaml:"profile"`
	// SPIFFEID is what https_spiffe presents; empty: spiffe://<td>/meshid.
	SPIFFEID string `yaml:"spiffe_id"`
	// CertFile and KeyFile are https_web's certificate chain and key,
	// read again when they change.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// RefreshHint is the spiffe_refresh_hint served: how often others
	// should fetch again. Zero: DefaultRefreshHint.
	RefreshHint time.Duration `yaml:"refresh_hint"`
}

// DefaultRefreshHint is the refresh hint of a bundle endpoint that sets
// none, and how often a fetched bundle without one is fetched again.
const DefaultRefreshHint = 5 * time.Minute

// FederatedBundle is one other trust domain's bundle: from a file (PEM
// X.509 roots, or a SPIFFE bundle with X.509 roots, JWT keys or both),
// from that domain's bundle endpoint, or both, the file then being the
// bootstrap. Files are read, and their format told, when meshid starts
// (node's loadFederation), not here.
type FederatedBundle struct {
	TrustDomain string `yaml:"trust_domain"`
	BundleFile  string `yaml:"bundle_file"`
	// EndpointURL is the other domain's bundle endpoint, https://...
	EndpointURL string `yaml:"endpoint_url"`
	// EndpointSPIFFEID selects the https_spiffe profile: the endpoint must
	// present an SVID with this ID, verified against the bundle as last
	// fetched (or bundle_file at first). Empty: https_web.
	EndpointSPIFFEID string `yaml:"endpoint_spiffe_id"`
	// EndpointCAFile holds the web PKI roots https_web verifies the
	// endpoint with; empty: the system's roots.
	EndpointCAFile string `yaml:"endpoint_ca_file"`
}

func (f *Federation) paths() []*string {
	var paths []*string
	if e := f.BundleEndpoint; e != nil {
		paths = append(paths, &e.CertFile, &e.KeyFile)
	}
	for i := range f.Bundles {
		paths = append(paths, &f.Bundles[i].BundleFile, &f.Bundles[i].EndpointCAFile)
	}
	return paths
}

func (f *Federation) applyDefaults() {
	if e := f.BundleEndpoint; e != nil {
		if e.Profile == "" {
			e.Profile = ProfileSPIFFE
		}
		if e.RefreshHint == 0 {
			e.RefreshHint = DefaultRefreshHint
		}
	}
}

func (f Federation) validate(own string, bad func(path []any, format string, args ...any)) {
	if e := f.BundleEndpoint; e != nil {
		e.validate(own, bad)
	}
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
		if b.EndpointURL == "" {
			if b.BundleFile == "" {
				bad(at("bundle_file"), "federation.bundles[%d] needs a bundle_file, an endpoint_url or both", i)
			}
			if b.EndpointSPIFFEID != "" || b.EndpointCAFile != "" {
				bad(at("endpoint_url"), "federation.bundles[%d]: endpoint_spiffe_id and endpoint_ca_file need an endpoint_url", i)
			}
			continue
		}
		if u, err := url.Parse(b.EndpointURL); err != nil || u.Scheme != "https" || u.Host == "" {
			bad(at("endpoint_url"), "federation.bundles[%d].endpoint_url %q: want https://host[:port]/path", i, b.EndpointURL)
		}
		if b.EndpointSPIFFEID == "" {
			continue
		}
		switch id, err := spiffeid.FromString(b.EndpointSPIFFEID); {
		case err != nil:
			bad(at("endpoint_spiffe_id"), "federation.bundles[%d].endpoint_spiffe_id %q: %v", i, b.EndpointSPIFFEID, err)
		case err == nil && id.TrustDomain().Name() != td.Name():
			bad(at("endpoint_spiffe_id"), "federation.bundles[%d].endpoint_spiffe_id %q is not in trust domain %q: the endpoint is verified against that domain's own bundle", i, b.EndpointSPIFFEID, b.TrustDomain)
		}
		if b.EndpointCAFile != "" {
			bad(at("endpoint_ca_file"), "federation.bundles[%d]: endpoint_ca_file is for https_web, but endpoint_spiffe_id selects https_spiffe", i)
		}
	}
}

func (e BundleEndpoint) validate(own string, bad func(path []any, format string, args ...any)) {
	at := func(key string) []any { return []any{"federation", "bundle_endpoint", key} }
	if err := checkHostPort(e.Address); err != nil {
		bad(at("address"), "federation.bundle_endpoint.address: %v", err)
	}
	if e.RefreshHint < time.Second {
		bad(at("refresh_hint"), "federation.bundle_endpoint.refresh_hint %s is shorter than 1s", e.RefreshHint)
	}
	switch e.Profile {
	case ProfileSPIFFE:
		if e.CertFile != "" || e.KeyFile != "" {
			bad(at("cert_file"), "federation.bundle_endpoint: cert_file and key_file are for https_web; https_spiffe presents meshid's own SVID")
		}
		if e.SPIFFEID == "" {
			return
		}
		switch id, err := spiffeid.FromString(e.SPIFFEID); {
		case err != nil:
			bad(at("spiffe_id"), "federation.bundle_endpoint.spiffe_id %q: %v", e.SPIFFEID, err)
		case id.TrustDomain().Name() != own:
			bad(at("spiffe_id"), "federation.bundle_endpoint.spiffe_id %q is not in this node's trust domain %q", e.SPIFFEID, own)
		}
	case ProfileWeb:
		if e.CertFile == "" || e.KeyFile == "" {
			bad(at("profile"), "federation.bundle_endpoint: https_web needs cert_file and key_file")
		}
		if e.SPIFFEID != "" {
			bad(at("spiffe_id"), "federation.bundle_endpoint.spiffe_id is for https_spiffe, not https_web")
		}
	default:
		bad(at("profile"), "federation.bundle_endpoint.profile %q: want https_spiffe or https_web", e.Profile)
	}
}
