package node

import (
	"crypto/tls"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/internal/config"
)

// authzTLSConfig is the mutual TLS configuration of the authz listeners:
// meshid presents its own SVID and accepts callers presenting an SVID of
// its trust domain, or one of authz.tls.client_ids when that is set. Nil
// when authz.tls.spiffe_id is empty (plaintext). The SVID is read at every
// handshake, so its renewal and CA rotation need nothing more here.
func authzTLSConfig(cfg config.AuthzTLS, self *identity.SelfSVID) (*tls.Config, error) {
	if self == nil {
		return nil, nil
	}
	authorize := tlsconfig.AuthorizeMemberOf(self.ID().TrustDomain())
	if len(cfg.ClientIDs) > 0 {
		ids := make([]spiffeid.ID, 0, len(cfg.ClientIDs))
		for _, c := range cfg.ClientIDs {
			id, err := spiffeid.FromString(c)
			if err != nil {
				return nil, fmt.Errorf("authz.tls.client_ids: %q: %w", c, err)
			}
			ids = append(ids, id)
		}
		authorize = tlsconfig.AuthorizeOneOf(ids...)
	}
	return tlsconfig.MTLSServerConfig(self, self, authorize), nil
}
