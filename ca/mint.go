package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// newGeneration creates the key material of a generation: a self-signed
// root (unless an upstream provides the CA) and a JWT signing key.
func (a *Authority) newGeneration(ctx context.Context, now time.Time) (*generation, error) {
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), a.rand)
	if err != nil {
		return nil, fmt.Errorf("generate JWT signing key: %w", err)
	}
	kid, err := keyID(jwtKey.Public())
	if err != nil {
		return nil, err
	}
	g := &generation{jwtKey: jwtKey, jwtKID: kid}
	if a.up != nil {
		if err := a.up.issue(ctx, g, now, a.rand); err != nil {
			return nil, err
		}
		return g, nil
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), a.rand)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := a.serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshid"}, CommonName: a.td.Name() + " CA"},
		URIs:                  []*url.URL{a.td.ID().URL()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(a.ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(a.rand, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CA: %w", err)
	}
	g.chain, g.key = []*x509.Certificate{cert}, key
	return g, nil
}

// SVIDRequest describes one X509-SVID to mint.
type SVIDRequest struct {
	ID       spiffeid.ID
	TTL      time.Duration
	DNSNames []string
}

// MintX509SVID generates a fresh P-256 key and signs an X509-SVID for it
// with the active generation; the chain includes any upstream
// intermediates. The lifetime is capped at the signer's own expiry, so no
// SVID outlives the CA that vouches for it. With no valid generation it
// returns an error wrapping ErrNoValidCA.
func (a *Authority) MintX509SVID(req SVIDRequest) (*x509svid.SVID, error) {
	if !req.ID.MemberOf(a.td) {
		return nil, fmt.Errorf("mint %s: not in trust domain %s", req.ID, a.td)
	}
	if req.TTL <= 0 {
		return nil, fmt.Errorf("mint %s: ttl %s must be positive", req.ID, req.TTL)
	}
	g, now, err := a.signer()
	if err != nil {
		return nil, fmt.Errorf("mint %s: %w", req.ID, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), a.rand)
	if err != nil {
		return nil, fmt.Errorf("mint %s: generate key: %w", req.ID, err)
	}
	serial, err := a.serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshid"}},
		URIs:                  []*url.URL{req.ID.URL()},
		DNSNames:              req.DNSNames,
		NotBefore:             now.Add(-backdate),
		NotAfter:              capLifetime(now, req.TTL, g),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(a.rand, tmpl, g.cert(), key.Public(), g.key)
	if err != nil {
		return nil, fmt.Errorf("mint %s: sign: %w", req.ID, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("mint %s: parse: %w", req.ID, err)
	}
	// Self-signed: the leaf alone (peers hold the root). Upstream: the leaf
	// and the intermediates, which peers need to reach the upstream root.
	chain := []*x509.Certificate{leaf}
	if a.up != nil {
		chain = append(chain, g.chain...)
	}
	a.metrics.issuedX509.Inc()
	return &x509svid.SVID{ID: req.ID, Certificates: slices.Clip(chain), PrivateKey: key}, nil
}

// capLifetime returns now+ttl, capped at the signer's expiry. The signer
// is valid at now, so the result is after now.
func capLifetime(now time.Time, ttl time.Duration, g *generation) time.Time {
	notAfter := now.Add(ttl)
	if caEnd := g.cert().NotAfter; notAfter.After(caEnd) {
		return caEnd
	}
	return notAfter
}

// Serial numbers are 128 random bits, never zero: unique without
// coordination, as RFC 5280 allows.
var (
	maxSerial = new(big.Int).Lsh(big.NewInt(1), 128)
	one       = big.NewInt(1)
)

func (a *Authority) serial() (*big.Int, error) {
	n, err := rand.Int(a.rand, maxSerial)
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, one), nil
}
