package node

import (
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/internal/config"
)

// loadFederation reads the federated trust domains' bundle files. They are
// read once at start; following their changes is federation's own issue.
func loadFederation(cfg config.Federation) (*spiffebundle.Set, error) {
	set := spiffebundle.NewSet()
	for i, b := range cfg.Bundles {
		td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
		if err != nil {
			return nil, err // config validation already said where
		}
		bundle, err := identity.ReadBundleFile(td, b.BundleFile)
		if err != nil {
			return nil, fmt.Errorf("federation.bundles[%d] (%s): %s: %w", i, b.TrustDomain, b.BundleFile, err)
		}
		set.Add(bundle)
	}
	return set, nil
}
