package identity

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ReadBundleFile reads one federated trust domain's bundle in either
// format a partner may hand out, told apart by content so the file name
// need not say: PEM X.509 roots (what `meshid bundle show` prints by
// default, and any CA's certificate file), or a SPIFFE bundle, the JWKS
// document with "use" x509-svid and jwt-svid keys (`meshid bundle show
// -format jwks`, `spire-server bundle show -format spiffe`). Only the
// latter can carry JWT keys. A file that yields no key at all is refused:
// federating with it would silently accept nothing. Errors about the
// content do not name the file; the caller says where it was configured.
func ReadBundleFile(td spiffeid.TrustDomain, path string) (*spiffebundle.Bundle, error) {
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

var _ jwtbundle.Source = (*Manager)(nil)

// GetJWTBundleForTrustDomain makes the Manager the node-wide JWT bundle
// source, for authz: meshid's own trust domain's JWT keys as the CA has
// them now, or a federated trust domain's. Authz serves the whole node,
// not one caller, so no entry's federates_with narrows the federated ones
// down; a caller's own view is its Subscription's JWTBundles.
func (m *Manager) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	own := m.minter.JWTBundle()
	if own.TrustDomain() == td {
		return own, nil
	}
	if b, ok := m.federatedJWT.Get(td); ok {
		return b, nil
	}
	return nil, fmt.Errorf("no JWT bundle for trust domain %q: neither meshid's own (%q) nor federated with JWT keys", td, own.TrustDomain())
}

// CheckFederation reports, at each entry's file:line, a federates_with
// naming a trust domain no bundle is configured for: the entry would
// silently not get it.
func CheckFederation(entries []Entry, federated *spiffebundle.Set) error {
	var errs []error
	for _, e := range entries {
		for _, td := range e.FederatesWith {
			if !federated.Has(td) {
				errs = append(errs, fmt.Errorf("%s: federates_with %q, but federation.bundles has no bundle for it", e.Source, td.Name()))
			}
		}
	}
	return errors.Join(errs...)
}

// federatedWith lists the trust domains entries federate with, sorted and
// once each, so two sets of entries compare equal when they grant the same.
func federatedWith(entries []Entry) []string {
	var names []string
	for _, e := range entries {
		for _, td := range e.FederatesWith {
			names = append(names, td.Name())
		}
	}
	return slices.Compact(slices.Sorted(slices.Values(names)))
}

// SetFederatedBundle replaces one federated trust domain's bundle, as its
// bundle endpoint refreshed it, and tells every caller whose entries
// federate with that domain. Like at start, a bundle without X.509 roots
// (or JWT keys) takes the domain out of the X.509 (or JWT) set rather than
// hand callers an empty one.
func (m *Manager) SetFederatedBundle(b *spiffebundle.Bundle) {
	td := b.TrustDomain()
	m.federated.Add(b)
	if len(b.X509Authorities()) > 0 {
		m.federatedX509.Add(b.X509Bundle())
	} else {
		m.federatedX509.Remove(td)
	}
	if len(b.JWTAuthorities()) > 0 {
		m.federatedJWT.Add(b.JWTBundle())
	} else {
		m.federatedJWT.Remove(td)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.federatedSet[td.Name()] = m.clock()
	for sub := range m.subs {
		if slices.Contains(federatedWith(sub.entries), td.Name()) {
			sub.notify()
		}
	}
}
