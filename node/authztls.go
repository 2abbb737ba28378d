package node

import (
	"crypto/tls"
	"fmt"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/internal/config"
)

// selfIdentity is meshid's own X509-SVID, which its authz listeners present
// (authz.tls.spiffe_id), and the bundle they verify callers against. It is
// an x509svid.Source and an x509bundle.Source for go-spiffe's tlsconfig.
//
// The SVID is minted by meshid's own CA when a handshake first needs it and
// again once it is past half its life, so every handshake presents a fresh
// certificate without a renewal loop: a certificate only matters at the
// handshake, and connections to the authz server are few and long-lived.
// The bundle is read from the CA at every handshake, so CA rotation needs
// nothing more.
type selfIdentity struct {
	id    spiffeid.ID
	ttl   time.Duration
	clock func() time.Time

	authority *ca.Authority

	mu      sync.Mutex
	svid    *x509svid.SVID
	renewAt time.Time
}

func newSelfIdentity(id spiffeid.ID, ttl time.Duration, a *ca.Authority) *selfIdentity {
	return &selfIdentity{id: id, ttl: ttl, clock: time.Now, authority: a}
}

// GetX509SVID returns the current SVID, minting a new one when there is
// none yet or it is past half its life.
func (s *selfIdentity) GetX509SVID() (*x509svid.SVID, error) {
	a := s.authority
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock()
	if s.svid != nil && now.Before(s.renewAt) {
		return s.svid, nil
	}
	svid, err := a.MintX509SVID(ca.SVIDRequest{ID: s.id, TTL: s.ttl})
	if err != nil {
		// An SVID still inside its validity beats none: the handshake can
		// go on while the CA is unwell, and the next one tries again.
		if s.svid != nil && now.Before(s.svid.Certificates[0].NotAfter) {
			return s.svid, nil
		}
		return nil, fmt.Errorf("meshid's own SVID %s: %w", s.id, err)
	}
	leaf := svid.Certificates[0]
	s.svid, s.renewAt = svid, leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore)/2)
	return svid, nil
}

// GetX509BundleForTrustDomain returns the CA's bundle: callers must hold an
// SVID of meshid's own trust domain.
func (s *selfIdentity) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.authority.X509Bundle().GetX509BundleForTrustDomain(td)
}

// authzTLSConfig is the mutual TLS configuration of the authz listeners:
// meshid presents its own SVID and accepts callers presenting an SVID of
// its trust domain, or one of authz.tls.client_ids when that is set. Nil
// when authz.tls.spiffe_id is empty (plaintext).
func authzTLSConfig(cfg config.AuthzTLS, self *selfIdentity) (*tls.Config, error) {
	if self == nil {
		return nil, nil
	}
	authorize := tlsconfig.AuthorizeMemberOf(self.id.TrustDomain())
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
