package identity

import (
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/ca"
)

// SelfSVID is meshid's own X509-SVID, for the listeners where meshid is a
// TLS party itself (authz.tls), and the bundle they verify peers against:
// an x509svid.Source and an x509bundle.Source for go-spiffe's tlsconfig.
// It lives in the Manager's cache under the same renewal rule as every
// workload's SVID (see svids.go), so Run renews it at half its life.
type SelfSVID struct {
	m   *Manager
	k   svidKey
	req ca.SVIDRequest
}

var (
	_ x509svid.Source   = (*SelfSVID)(nil)
	_ x509bundle.Source = (*SelfSVID)(nil)
)

// Self returns meshid's own SVID for id, with lifetime ttl (zero: the
// default X509-SVID TTL). It is first minted when a handshake asks for it;
// from then on Run keeps it fresh whatever the entries say.
func (m *Manager) Self(id spiffeid.ID, ttl time.Duration) *SelfSVID {
	if ttl == 0 {
		ttl = m.defaultTTL
	}
	return &SelfSVID{
		m:   m,
		k:   svidKey{id: id.String(), ttl: ttl, self: true},
		req: ca.SVIDRequest{ID: id, TTL: ttl},
	}
}

// ID is the SPIFFE ID meshid presents.
func (s *SelfSVID) ID() spiffeid.ID { return s.req.ID }

// GetX509SVID returns the SVID, renewing it first when Run is late.
func (s *SelfSVID) GetX509SVID() (*x509svid.SVID, error) {
	svid, err := s.m.svid(s.k, s.req)
	if err != nil {
		return nil, fmt.Errorf("meshid's own SVID %s: %w", s.req.ID, err)
	}
	return svid, nil
}

// GetX509BundleForTrustDomain returns the CA's bundle as of now, so CA
// rotation needs nothing more: peers must hold an SVID of meshid's own
// trust domain.
func (s *SelfSVID) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.m.minter.X509Bundle().GetX509BundleForTrustDomain(td)
}
