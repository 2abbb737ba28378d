// Package ca owns the signing keys of one trust domain: it creates, loads
// and rotates the CA generations on disk, publishes their trust bundles
// (X.509 roots and JWT keys) and mints X509- and JWT-SVIDs. It never decides
// who gets an identity; that is the identity package's job.
package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// backdate absorbs clock skew between meshid and the peers that verify its
// certificates.
const backdate = 10 * time.Second

// Options configures an Authority.
type Options struct {
	TrustDomain spiffeid.TrustDomain
	// Dir holds the CA material (data_dir); created 0700.
	Dir string
	// TTL is the lifetime of each self-signed CA generation.
	TTL time.Duration
	// Upstream, when set, makes meshid's CA an intermediate of an existing
	// root instead of a self-signed root of its own.
	Upstream *Upstream
	Clock    func() time.Time
	Rand     io.Reader
	Log      *slog.Logger
}

// Upstream names the files of an intermediate CA minted for this node by an
// upstream root (see MintIntermediate), and that root's bundle.
type Upstream struct {
	CertFile   string // the intermediate, optionally followed by more intermediates towards the root
	KeyFile    string // the intermediate's private key
	BundleFile string // the upstream root(s), PEM
}

// Authority is the CA of one trust domain: a list of generations, oldest
// first, each a CA certificate and key plus a JWT signing key. One of them
// signs (the active one); all of them are trusted until they expire.
//
// Self-signed generations rotate on this timeline, derived from the
// certificates alone so that a restart at any moment resumes it exactly:
//
//   - at 1/2 of the active generation's life the next one is created and
//     its root and JWT key are published in the bundles;
//   - at 5/6 of the active generation's life the next one starts signing;
//   - a generation leaves the bundles when it expires. Every SVID it signed
//     expires no later (lifetimes are capped at the signer's NotAfter).
//
// An upstream intermediate cannot be renewed without the upstream key, so
// in upstream mode there is one generation, used until it expires.
type Authority struct {
	td       spiffeid.TrustDomain
	ttl      time.Duration
	clock    func() time.Time
	rand     io.Reader
	log      *slog.Logger
	store    store
	upstream *upstreamCA // nil for a self-signed CA

	mu   sync.RWMutex
	gens []*generation // unexpired, oldest first
}

// generation is one CA: it signs X509-SVIDs with key and JWT-SVIDs with
// jwtKey.
type generation struct {
	name   string              // its directory under the store
	chain  []*x509.Certificate // the CA certificate, then any upstream intermediates
	key    crypto.Signer
	jwtKey crypto.Signer
	jwtKID string
}

func (g *generation) cert() *x509.Certificate { return g.chain[0] }

// lifeAt returns the instant a fraction of g's life has passed.
func (g *generation) lifeAt(num, den int64) time.Time {
	c := g.cert()
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * time.Duration(num) / time.Duration(den))
}

// Open loads the CA generations persisted in opts.Dir, creates the first
// one if there is none, and brings the timeline up to now. It refuses to
// start, saying what to fix, on anything it cannot trust: unreadable,
// corrupt or mismatched files, loose key permissions, another trust domain,
// an expired or unverifiable upstream certificate.
func Open(opts Options) (*Authority, error) {
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.Reader
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.TTL <= 0 {
		return nil, fmt.Errorf("CA ttl %s must be positive", opts.TTL)
	}
	a := &Authority{
		td:    opts.TrustDomain,
		ttl:   opts.TTL,
		clock: opts.Clock,
		rand:  opts.Rand,
		log:   opts.Log,
	}
	if opts.Upstream != nil {
		up, err := loadUpstream(*opts.Upstream, a.td, a.clock())
		if err != nil {
			return nil, err
		}
		a.upstream = up
		a.store.dir = filepath.Join(opts.Dir, "upstream")
	} else {
		a.store = store{dir: filepath.Join(opts.Dir, "ca"), selfSigned: true}
	}
	if err := a.store.init(); err != nil {
		return nil, err
	}

	gens, err := a.store.load()
	if err != nil {
		return nil, err
	}
	for _, g := range gens {
		if err := a.adopt(g); err != nil {
			return nil, fmt.Errorf("CA generation %s: %w", a.store.path(g.name), err)
		}
	}
	a.gens = gens
	if _, err := a.Rotate(); err != nil {
		return nil, err
	}
	active := a.activeLocked(a.clock())
	a.log.Info("CA ready", "trust_domain", a.td, "active", active.name,
		"expires", active.cert().NotAfter, "generations", len(a.gens), "upstream", a.upstream != nil)
	return a, nil
}

// adopt checks a generation loaded from disk and completes it from the
// upstream material in upstream mode.
func (a *Authority) adopt(g *generation) error {
	if a.upstream != nil {
		g.chain, g.key = a.upstream.chain, a.upstream.key
		return nil
	}
	return checkCA(g.cert(), g.key, a.td)
}

// Rotate brings the generations in line with the timeline at the current
// time. It reports whether the published bundles changed, so that callers
// can push them to every consumer.
func (a *Authority) Rotate() (bundleChanged bool, err error) {
	now := a.clock()
	a.mu.Lock()
	defer a.mu.Unlock()

	live := a.gens[:0:0]
	for _, g := range a.gens {
		if now.Before(g.cert().NotAfter) {
			live = append(live, g)
			continue
		}
		bundleChanged = true
		a.log.Info("CA generation expired: removing it from the bundle", "generation", g.name, "expired", g.cert().NotAfter)
		if err := a.store.remove(g.name); err != nil {
			a.log.Warn("could not remove expired CA generation", "generation", g.name, "err", err)
		}
	}
	a.gens = live

	switch {
	case len(a.gens) == 0:
		if a.upstream != nil && !now.Before(a.upstream.chain[0].NotAfter) {
			return bundleChanged, fmt.Errorf("upstream CA certificate expired at %s: mint a new intermediate for this node (meshid ca mint-intermediate)", a.upstream.chain[0].NotAfter.Format(time.RFC3339))
		}
		if err := a.prepareLocked(now); err != nil {
			return bundleChanged, err
		}
		return true, nil
	case a.upstream != nil:
		return bundleChanged, nil // nothing to rotate without the upstream key
	}

	newest := a.gens[len(a.gens)-1]
	if !now.Before(newest.lifeAt(1, 2)) {
		if err := a.prepareLocked(now); err != nil {
			return bundleChanged, err
		}
		bundleChanged = true
	}
	return bundleChanged, nil
}

// prepareLocked creates, persists and publishes the next generation.
func (a *Authority) prepareLocked(now time.Time) error {
	g, err := a.newGeneration(now)
	if err != nil {
		return err
	}
	if g.name, err = a.store.save(g); err != nil {
		return err
	}
	a.gens = append(a.gens, g)
	a.log.Info("prepared CA generation: published in the bundle", "generation", g.name,
		"not_after", g.cert().NotAfter, "signs_from", a.signsFromLocked(g))
	return nil
}

// signsFromLocked says when g starts signing: at 5/6 of its predecessor's
// life, or at once if it has none.
func (a *Authority) signsFromLocked(g *generation) time.Time {
	for i := 1; i < len(a.gens); i++ {
		if a.gens[i] == g {
			return a.gens[i-1].lifeAt(5, 6)
		}
	}
	return g.cert().NotBefore
}

// activeLocked returns the generation that signs at now: the newest one
// whose predecessor has passed 5/6 of its life.
func (a *Authority) activeLocked(now time.Time) *generation {
	active := a.gens[0]
	for i := 1; i < len(a.gens); i++ {
		if !now.Before(a.gens[i-1].lifeAt(5, 6)) {
			active = a.gens[i]
		}
	}
	return active
}

func (a *Authority) active() *generation {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.activeLocked(a.clock())
}

// X509Bundle returns the roots peers must trust: every unexpired
// self-signed generation, or the upstream roots.
func (a *Authority) X509Bundle() *x509bundle.Bundle {
	if a.upstream != nil {
		return x509bundle.FromX509Authorities(a.td, a.upstream.roots)
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	roots := make([]*x509.Certificate, len(a.gens))
	for i, g := range a.gens {
		roots[i] = g.cert()
	}
	return x509bundle.FromX509Authorities(a.td, roots)
}

// JWTBundle returns the public keys of every unexpired generation's JWT
// signing key, by key ID.
func (a *Authority) JWTBundle() *jwtbundle.Bundle {
	a.mu.RLock()
	defer a.mu.RUnlock()
	keys := make(map[string]crypto.PublicKey, len(a.gens))
	for _, g := range a.gens {
		keys[g.jwtKID] = g.jwtKey.Public()
	}
	return jwtbundle.FromJWTAuthorities(a.td, keys)
}

// Certificate returns the certificate of the CA that signs now.
func (a *Authority) Certificate() *x509.Certificate { return a.active().cert() }

// checkCA verifies that a loaded CA certificate and key belong together
// and to the trust domain.
func checkCA(cert *x509.Certificate, key crypto.Signer, td spiffeid.TrustDomain) error {
	if !cert.IsCA {
		return errors.New("certificate is not a CA")
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return errors.New("private key does not match the certificate")
	}
	return checkTrustDomain(cert, td)
}

// checkTrustDomain refuses a CA that names another trust domain. A CA
// without a SPIFFE URI SAN is accepted: the SPIFFE spec does not require one.
func checkTrustDomain(cert *x509.Certificate, td spiffeid.TrustDomain) error {
	for _, u := range cert.URIs {
		id, err := spiffeid.FromURI(u)
		if err == nil && id.TrustDomain() != td {
			return fmt.Errorf("CA belongs to trust domain %q, not %q; point data_dir elsewhere or remove it to start a new trust domain", id.TrustDomain().Name(), td.Name())
		}
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}
