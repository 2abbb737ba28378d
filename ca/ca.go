// Package ca owns the signing keys of one trust domain: it creates or loads
// the CA from disk and mints X509-SVIDs. It never decides who gets an
// identity; that is the identity package's job.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// backdate absorbs clock skew between meshid and the peers that verify its
// certificates.
const backdate = 10 * time.Second

// Options configures a CA.
type Options struct {
	TrustDomain spiffeid.TrustDomain
	Dir         string        // where the CA key and certificate live
	TTL         time.Duration // lifetime of a newly created CA
	Clock       func() time.Time
	Rand        io.Reader
	Log         *slog.Logger
}

// CA is a self-signed certificate authority for one trust domain.
type CA struct {
	td    spiffeid.TrustDomain
	cert  *x509.Certificate
	key   crypto.Signer
	clock func() time.Time
	rand  io.Reader
}

// LoadOrCreate loads the CA persisted in opts.Dir or, on first start, creates
// and persists a new one. A CA that has expired is replaced with a warning:
// without CA rotation (a later issue) nothing else could make progress.
func LoadOrCreate(opts Options) (*CA, error) {
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	c := &CA{td: opts.TrustDomain, clock: opts.Clock, rand: opts.Rand}

	st := store{dir: opts.Dir}
	cert, key, err := st.load()
	switch {
	case errors.Is(err, errNotFound):
		opts.Log.Info("creating a new CA", "trust_domain", opts.TrustDomain, "dir", opts.Dir)
	case err != nil:
		return nil, err
	default:
		if err := checkLoaded(cert, key, opts.TrustDomain); err != nil {
			return nil, fmt.Errorf("CA in %s: %w", opts.Dir, err)
		}
		if now := opts.Clock(); !now.Before(cert.NotAfter) {
			opts.Log.Warn("the persisted CA has expired; creating a new one", "expired", cert.NotAfter, "dir", opts.Dir)
		} else {
			c.cert, c.key = cert, key
			opts.Log.Info("loaded CA", "trust_domain", opts.TrustDomain, "expires", cert.NotAfter, "dir", opts.Dir)
			return c, nil
		}
	}

	if c.cert, c.key, err = c.newRoot(opts.TTL); err != nil {
		return nil, err
	}
	if err := st.save(c.cert, c.key); err != nil {
		return nil, err
	}
	return c, nil
}

func checkLoaded(cert *x509.Certificate, key crypto.Signer, td spiffeid.TrustDomain) error {
	if !cert.IsCA {
		return errors.New("certificate is not a CA")
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return errors.New("private key does not match the certificate")
	}
	want := td.ID().String()
	for _, u := range cert.URIs {
		if u.String() == want {
			return nil
		}
	}
	return fmt.Errorf("CA belongs to another trust domain (want %s); point data_dir elsewhere or remove it to start a new trust domain", want)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}

func (c *CA) newRoot(ttl time.Duration) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), c.rand)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := c.serial()
	if err != nil {
		return nil, nil, err
	}
	now := c.clock()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshid"}, CommonName: c.td.Name() + " CA"},
		URIs:                  []*url.URL{c.td.ID().URL()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(c.rand, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse new CA: %w", err)
	}
	return cert, key, nil
}

// SVIDRequest describes one X509-SVID to mint.
type SVIDRequest struct {
	ID       spiffeid.ID
	TTL      time.Duration
	DNSNames []string
}

// MintX509SVID generates a fresh P-256 key and signs an X509-SVID for it.
// The lifetime is capped at the CA's own expiry, so no SVID outlives the key
// that vouches for it.
func (c *CA) MintX509SVID(req SVIDRequest) (*x509svid.SVID, error) {
	if !req.ID.MemberOf(c.td) {
		return nil, fmt.Errorf("mint %s: not in trust domain %s", req.ID, c.td)
	}
	if req.TTL <= 0 {
		return nil, fmt.Errorf("mint %s: ttl %s must be positive", req.ID, req.TTL)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), c.rand)
	if err != nil {
		return nil, fmt.Errorf("mint %s: generate key: %w", req.ID, err)
	}
	serial, err := c.serial()
	if err != nil {
		return nil, err
	}
	now := c.clock()
	notAfter := now.Add(req.TTL)
	if notAfter.After(c.cert.NotAfter) {
		notAfter = c.cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("mint %s: the CA expired at %s", req.ID, c.cert.NotAfter.Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshid"}},
		URIs:                  []*url.URL{req.ID.URL()},
		DNSNames:              req.DNSNames,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(c.rand, tmpl, c.cert, key.Public(), c.key)
	if err != nil {
		return nil, fmt.Errorf("mint %s: sign: %w", req.ID, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("mint %s: parse: %w", req.ID, err)
	}
	return &x509svid.SVID{
		ID:           req.ID,
		Certificates: []*x509.Certificate{leaf},
		PrivateKey:   key,
	}, nil
}

// X509Bundle returns the trust bundle of the CA's trust domain.
func (c *CA) X509Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(c.td, []*x509.Certificate{c.cert})
}

// Certificate returns the CA certificate (for status and metrics).
func (c *CA) Certificate() *x509.Certificate { return c.cert }

func (c *CA) serial() (*big.Int, error) {
	// 128 random bits: unique without coordination, as RFC 5280 allows.
	n, err := rand.Int(c.rand, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
