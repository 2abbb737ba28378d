package node

import (
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/internal/config"
)

// LintOptions maps cfg to what `meshid entry lint` checks entries
// against: the trust domain, the CA's lifetime and the selector types the
// daemon attests with cfg (unix always, docker and k8s when their sections
// are present, as newAttestor builds them).
func LintOptions(cfg config.Config) (identity.LintOptions, error) {
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return identity.LintOptions{}, err // config validation already said where
	}
	types := []string{"unix"}
	if cfg.Docker != nil {
		types = append(types, "docker")
	}
	if cfg.K8s != nil {
		types = append(types, "k8s")
	}
	return identity.LintOptions{TrustDomain: td, CATTL: cfg.CA.TTL, Types: types}, nil
}
