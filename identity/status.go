package identity

import (
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// What the manager holds, for operators (meshid status) and the metrics:
// copies made under m.mu, never a key, never a reference into the cache.

// SVIDStatus describes one X509-SVID the manager holds.
type SVIDStatus struct {
	SPIFFEID  string    `json:"spiffe_id"`
	Serial    string    `json:"serial"` // lower-case hex, as Envoy's /certs prints it
	DNSNames  []string  `json:"dns_names,omitempty"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	RenewAt   time.Time `json:"renew_at"`
	// Self marks meshid's own SVIDs (authz.tls), which never leave meshid.
	Self bool `json:"self,omitempty"`
}

// SVIDs returns the X509-SVIDs in the cache, by SPIFFE ID then expiry.
// An entry nobody has asked for yet has none: SVIDs are minted on demand.
func (m *Manager) SVIDs() []SVIDStatus {
	m.mu.Lock()
	out := make([]SVIDStatus, 0, len(m.svids))
	for k, is := range m.svids {
		leaf := is.svid.Certificates[0]
		out = append(out, SVIDStatus{
			SPIFFEID:  k.id,
			Serial:    leaf.SerialNumber.Text(16),
			DNSNames:  slices.Clone(leaf.DNSNames),
			NotBefore: leaf.NotBefore,
			NotAfter:  leaf.NotAfter,
			RenewAt:   is.renewAt,
			Self:      k.self,
		})
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b SVIDStatus) int {
		if c := strings.Compare(a.SPIFFEID, b.SPIFFEID); c != 0 {
			return c
		}
		return a.NotAfter.Compare(b.NotAfter)
	})
	return out
}

// earliestExpiry is meshid_svid_expiry_seconds: the Unix time the first
// cached X509-SVID expires, +Inf with none (nothing can expire).
func (m *Manager) earliestExpiry() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	first := math.Inf(1)
	for _, is := range m.svids {
		if t := float64(is.svid.Certificates[0].NotAfter.Unix()); t < first {
			first = t
		}
	}
	return first
}

// SubscriptionStatus describes one subscription's caller: the kernel's
// account of it, the selectors it was attested with and the identities
// the entries in force give it.
type SubscriptionStatus struct {
	PID       int32    `json:"pid"`
	UID       uint32   `json:"uid"`
	GID       uint32   `json:"gid"`
	Selectors []string `json:"selectors"`
	SPIFFEIDs []string `json:"spiffe_ids"`
}

// Status describes the subscription's caller now.
func (s *Subscription) Status() SubscriptionStatus {
	return SubscriptionStatus{
		PID:       s.caller.PID,
		UID:       s.caller.UID,
		GID:       s.caller.GID,
		Selectors: selectorList(s.selectors),
		SPIFFEIDs: idList(s.matched()),
	}
}

// FederatedBundle describes one other trust domain's bundle the manager
// hands to the callers that federate with it.
type FederatedBundle struct {
	TrustDomain string `json:"trust_domain"`
	X509Roots   int    `json:"x509_roots"`
	JWTKeys     int    `json:"jwt_keys"`
	// RootsExpire is when the first of its X.509 roots expires; zero
	// without roots.
	RootsExpire    time.Time `json:"roots_expire,omitzero"`
	SequenceNumber uint64    `json:"sequence_number,omitempty"`
	// Since is when this bundle was put in force: at start, or when a
	// bundle endpoint last gave a new one.
	Since time.Time `json:"since"`
}

// Federated describes the federated bundles, by trust domain.
func (m *Manager) Federated() []FederatedBundle {
	m.mu.Lock()
	since := maps.Clone(m.federatedSet)
	m.mu.Unlock()
	var out []FederatedBundle
	for _, b := range m.federated.Bundles() {
		f := FederatedBundle{
			TrustDomain: b.TrustDomain().Name(),
			X509Roots:   len(b.X509Authorities()),
			JWTKeys:     len(b.JWTAuthorities()),
			Since:       since[b.TrustDomain().Name()],
		}
		for _, r := range b.X509Authorities() {
			if f.RootsExpire.IsZero() || r.NotAfter.Before(f.RootsExpire) {
				f.RootsExpire = r.NotAfter
			}
		}
		if n, ok := b.SequenceNumber(); ok {
			f.SequenceNumber = n
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b FederatedBundle) int { return strings.Compare(a.TrustDomain, b.TrustDomain) })
	return out
}
