package node

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/internal/config"
)

// federation is the federated trust domains' bundles.
type federation struct {
	set *spiffebundle.Set
	// jwt holds the JWT keys of those that have any, for the consumers
	// that are node-wide rather than per caller (authz).
	jwt *jwtbundle.Set
}

// loadFederation reads the federated trust domains' bundle files. They are
// read once at start; following their changes is federation's own issue.
func loadFederation(cfg config.Federation) (federation, error) {
	set := spiffebundle.NewSet()
	for i, b := range cfg.Bundles {
		td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
		if err != nil {
			return federation{}, err // config validation already said where
		}
		bundle, err := loadBundleFile(td, b.BundleFile)
		if err != nil {
			return federation{}, fmt.Errorf("federation.bundles[%d] (%s): %s: %w", i, b.TrustDomain, b.BundleFile, err)
		}
		set.Add(bundle)
	}
	return federation{set: set, jwt: federatedJWTBundles(set)}, nil
}

// loadBundleFile reads one trust domain's bundle in either format a
// partner may hand out, told apart by content so the file name need not
// say: PEM X.509 roots (what `meshid bundle show` prints by default, and
// any CA's certificate file), or a SPIFFE bundle, the JWKS document with
// "use" x509-svid and jwt-svid keys (`meshid bundle show -format jwks`,
// `spire-server bundle show -format spiffe`). Only the latter can carry
// JWT keys. A file that yields no key at all is refused: federating with
// it would silently accept nothing.
func loadBundleFile(td spiffeid.TrustDomain, path string) (*spiffebundle.Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	text := bytes.TrimSpace(data)
	switch {
	case len(text) == 0:
		return nil, errors.New("empty file: want PEM X.509 roots or a SPIFFE bundle (JSON)")
	case text[0] == '{':
		b, err := spiffebundle.Parse(td, text)
		if err != nil {
			return nil, fmt.Errorf("not a valid SPIFFE bundle: %w", err)
		}
		if len(b.X509Authorities()) == 0 && len(b.JWTAuthorities()) == 0 {
			return nil, errors.New(`SPIFFE bundle has no "x509-svid" and no "jwt-svid" keys`)
		}
		return b, nil
	}
	xb, err := x509bundle.Parse(td, text)
	switch {
	case err != nil && !bytes.Contains(text, []byte("-----BEGIN ")):
		return nil, fmt.Errorf("not PEM and not a SPIFFE bundle: %w", err)
	case err != nil:
		return nil, fmt.Errorf("PEM: %w", err)
	case len(xb.X509Authorities()) == 0:
		return nil, errors.New("PEM holds no certificate")
	}
	return spiffebundle.FromX509Bundle(xb), nil
}

// federatedJWTBundles is the JWT keys of every federated trust domain that
// has any, for the consumers that are node-wide rather than per caller
// (authz).
func federatedJWTBundles(set *spiffebundle.Set) *jwtbundle.Set {
	out := jwtbundle.NewSet()
	for _, b := range set.Bundles() {
		if len(b.JWTAuthorities()) > 0 {
			out.Add(b.JWTBundle())
		}
	}
	return out
}
