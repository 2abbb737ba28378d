package ca

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/meshid/meshid/internal/atomicfile"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// upstream is where a CA that is not self-signed gets its certificates
// and the roots peers trust: files an operator put in place (upstreamCA),
// or a PKI that signs this node's intermediates on request (remoteCA).
// The Authority's timeline asks it, and nothing else differs by kind.
type upstream interface {
	// roots returns the roots peers must trust, the X.509 bundle.
	roots() []*x509.Certificate
	// adopt checks or completes a generation loaded from the store.
	adopt(g *generation, now time.Time) error
	// due says whether newest needs a successor now, or why one is needed
	// and cannot be had.
	due(newest *generation, now time.Time) (bool, error)
	// issue gives a new generation its CA chain and key.
	issue(ctx context.Context, g *generation, now time.Time, rand io.Reader) error
	// poll refreshes the roots when due and reports whether they changed.
	poll(ctx context.Context, newest *generation, now time.Time, rand io.Reader) (bool, error)
	// tolerates says whether a failing rotation still leaves the CA
	// healthy (ready), given the newest generation.
	tolerates(newest *generation, now time.Time) bool
}

// upstreamCA is an intermediate CA of this node, issued by a root it does
// not hold the key of, read from files. It cannot be renewed without that
// key, so there is one generation, used until it expires.
type upstreamCA struct {
	chain  []*x509.Certificate // the intermediate first, then any above it
	key    crypto.Signer
	bundle []*x509.Certificate
}

func (u *upstreamCA) roots() []*x509.Certificate { return u.bundle }

func (u *upstreamCA) adopt(g *generation, _ time.Time) error {
	g.chain, g.key = u.chain, u.key
	return nil
}

func (u *upstreamCA) issue(_ context.Context, g *generation, _ time.Time, _ io.Reader) error {
	return u.adopt(g, time.Time{})
}

func (u *upstreamCA) due(newest *generation, now time.Time) (bool, error) {
	if newest.expiredAt(now) {
		return false, fmt.Errorf("upstream CA certificate expired at %s: mint a new intermediate for this node (meshid ca mint-intermediate), point ca.upstream at it and restart meshid",
			newest.cert().NotAfter.Format(time.RFC3339))
	}
	return false, nil // nothing to rotate without the upstream key
}

func (u *upstreamCA) poll(context.Context, *generation, time.Time, io.Reader) (bool, error) {
	return false, nil
}

func (u *upstreamCA) tolerates(*generation, time.Time) bool { return false }

// loadUpstream reads and checks the upstream files: the certificate must
// be a CA for td, match its key, be valid now and chain to the bundle.
func loadUpstream(u Upstream, td spiffeid.TrustDomain, now time.Time) (*upstreamCA, error) {
	where := func(key, path string, err error) error {
		return fmt.Errorf("ca.upstream.%s %s: %w", key, path, err)
	}
	certData, err := os.ReadFile(u.CertFile)
	if err != nil {
		return nil, where("cert_file", u.CertFile, err)
	}
	chain, err := parseCerts(certData)
	if err != nil {
		return nil, where("cert_file", u.CertFile, err)
	}
	key, err := readKey(u.KeyFile)
	if err != nil {
		return nil, where("key_file", u.KeyFile, err)
	}
	bundleData, err := os.ReadFile(u.BundleFile)
	if err != nil {
		return nil, where("bundle_file", u.BundleFile, err)
	}
	roots, err := parseCerts(bundleData)
	if err != nil {
		return nil, where("bundle_file", u.BundleFile, err)
	}

	cert := chain[0]
	if err := checkCA(cert, key, td); err != nil {
		return nil, where("cert_file", u.CertFile, err)
	}
	switch {
	case now.Before(cert.NotBefore):
		return nil, where("cert_file", u.CertFile, fmt.Errorf("not valid before %s", cert.NotBefore.Format(time.RFC3339)))
	case !now.Before(cert.NotAfter):
		return nil, where("cert_file", u.CertFile, fmt.Errorf("expired at %s; mint a new intermediate for this node (meshid ca mint-intermediate)", cert.NotAfter.Format(time.RFC3339)))
	}
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:         pool(roots),
		Intermediates: pool(chain[1:]),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, where("cert_file", u.CertFile, fmt.Errorf("does not chain to a root in bundle_file %s: %w", u.BundleFile, err))
	}
	return &upstreamCA{chain: chain, key: key, bundle: roots}, nil
}

func pool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// IntermediateOptions configures MintIntermediate.
type IntermediateOptions struct {
	RootCertFile, RootKeyFile string // a self-signed root, e.g. an organisation's offline CA or another meshid node's
	TrustDomain               spiffeid.TrustDomain
	TTL                       time.Duration
	OutDir                    string
	Clock                     func() time.Time
}

// Intermediate file names written by MintIntermediate, ready to be named in
// a node's ca.upstream.
const (
	IntermediateCertFile = "intermediate.crt"
	IntermediateKeyFile  = "intermediate.key"
	UpstreamBundleFile   = "bundle.crt"
)

// MintIntermediate issues a P-256 intermediate CA for one node from a root
// and writes it, its key (0600) and the root as the bundle into OutDir. It
// never replaces files that exist.
func MintIntermediate(o IntermediateOptions) error {
	if o.Clock == nil {
		o.Clock = time.Now
	}
	rootData, err := os.ReadFile(o.RootCertFile)
	if err != nil {
		return fmt.Errorf("root certificate: %w", err)
	}
	roots, err := parseCerts(rootData)
	if err != nil {
		return fmt.Errorf("%s: %w", o.RootCertFile, err)
	}
	root := roots[0]
	rootKey, err := readKey(o.RootKeyFile)
	if err != nil {
		return err
	}
	if err := checkCA(root, rootKey, o.TrustDomain); err != nil {
		return fmt.Errorf("%s: %w", o.RootCertFile, err)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return fmt.Errorf("%s is not a self-signed root; issue intermediates from the root itself", o.RootCertFile)
	}
	now := o.Clock()
	notAfter := now.Add(o.TTL)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter
	}
	if !notAfter.After(now) {
		return fmt.Errorf("%s expired at %s", o.RootCertFile, root.NotAfter.Format(time.RFC3339))
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate intermediate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, maxSerial)
	if err != nil {
		return fmt.Errorf("serial number: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial.Add(serial, one),
		Subject:               pkix.Name{Organization: []string{"meshid"}, CommonName: o.TrustDomain.Name() + " intermediate CA"},
		URIs:                  []*url.URL{o.TrustDomain.ID().URL()},
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // it signs workloads, never further CAs
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, key.Public(), rootKey)
	if err != nil {
		return fmt.Errorf("sign intermediate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("parse intermediate: %w", err)
	}
	keyData, err := keyPEM(key)
	if err != nil {
		return err
	}

	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{IntermediateKeyFile, keyData, 0o600},
		{IntermediateCertFile, certPEM(cert), 0o644},
		{UpstreamBundleFile, certPEM(root), 0o644},
	}
	// Checked before anything is written, so a refusal leaves OutDir as it
	// was; -out names an operator's own directory, not one others write to.
	for _, f := range files {
		path := filepath.Join(o.OutDir, f.name)
		switch _, err := os.Lstat(path); {
		case err == nil:
			return fmt.Errorf("%s exists; choose an empty -out directory", path)
		case !errors.Is(err, os.ErrNotExist):
			return fmt.Errorf("output file: %w", err)
		}
	}
	if err := os.MkdirAll(o.OutDir, 0o700); err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	for _, f := range files {
		if err := atomicfile.Write(filepath.Join(o.OutDir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}
