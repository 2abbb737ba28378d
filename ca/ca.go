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
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// backdate absorbs clock skew between meshid and the peers that verify its
// certificates. It is also how far in the future a generation on disk may
// start: one made by this node never does.
const backdate = 10 * time.Second

// Options configures an Authority.
type Options struct {
	TrustDomain spiffeid.TrustDomain
	// Dir holds the CA material (data_dir); created 0700, and refused when
	// another uid owns it or group or others may write to it.
	Dir string
	// TTL is the lifetime of each self-signed CA generation.
	TTL time.Duration
	// Upstream, when set, makes meshid's CA an intermediate of an existing
	// root instead of a self-signed root of its own, read from files.
	Upstream *Upstream
	// UpstreamAuthority, when set instead, signs each generation's
	// intermediate (TTL long) on request; its roots are read again every
	// RootsRefresh (default DefaultRootsRefresh) and on each renewal.
	UpstreamAuthority UpstreamAuthority
	RootsRefresh      time.Duration
	Clock             func() time.Time
	Rand              io.Reader
	Log               *slog.Logger
	// Metrics receives meshid_ca_expiry_seconds,
	// meshid_ca_rotation_failures_total, meshid_svid_issued_total and,
	// with an UpstreamAuthority, meshid_ca_upstream_failures_total; nil
	// leaves them unregistered.
	Metrics prometheus.Registerer
	// RotateInterval is how often Run advances the timeline; default 1s.
	RotateInterval time.Duration
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
//   - at 1/2 of the newest generation's life the next one is created and
//     its root and JWT key are published in the bundles;
//   - at 5/6 of a generation's life its successor starts signing;
//   - a generation leaves the bundles when it expires. Every SVID it signed
//     expires no later (lifetimes are capped at the signer's NotAfter).
//
// An upstream intermediate read from files cannot be renewed without the
// upstream key, so there is one generation, used until it expires. An
// UpstreamAuthority follows the same timeline as a self-signed CA, except
// that a generation's certificate is an intermediate it signed, requested
// between 45 % and 55 % of the newest one's life and retried with backoff
// while the upstream fails, and that the bundle is the upstream's roots.
//
// When a successor cannot be written, the generations still valid keep
// signing and the last one stays listed even past its expiry, so the
// bundles never empty; an expired generation never signs (see Health).
type Authority struct {
	td       spiffeid.TrustDomain
	ttl      time.Duration
	interval time.Duration
	clock    func() time.Time
	rand     io.Reader
	log      *slog.Logger
	store    store
	up       upstream // nil for a self-signed CA
	metrics  metrics

	// rotateMu serialises rotations (Run and Rotate may both call), so the
	// slow part, writing a generation, runs without holding mu.
	rotateMu      sync.Mutex
	bundleChanged chan struct{}

	mu   sync.RWMutex
	gens []*generation // oldest first; never empty after Open
	// version counts changes of the published bundles; reported is the
	// version Rotate last told its caller about.
	version, reported uint64
	// failure is the error of the last rotation and since when rotations
	// have failed; canSign whether a generation was valid at that rotation.
	// They drive the log lines on state changes and Health.
	failure      error
	failingSince time.Time
	canSign      bool
}

// generation is one CA: it signs X509-SVIDs with key and JWT-SVIDs with
// jwtKey.
type generation struct {
	name   string              // its directory under the store
	chain  []*x509.Certificate // the CA certificate, then any upstream intermediates
	key    crypto.Signer
	jwtKey crypto.Signer
	jwtKID string
	// orphaned is set when the upstream's roots no longer include the
	// one this generation chains to: peers would refuse what it signs,
	// so it signs nothing (Authority.mu).
	orphaned bool
}

func (g *generation) cert() *x509.Certificate { return g.chain[0] }

// lifeAt returns the instant a fraction of g's life has passed.
func (g *generation) lifeAt(num, den int64) time.Time {
	c := g.cert()
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * time.Duration(num) / time.Duration(den))
}

func (g *generation) expiredAt(now time.Time) bool { return !now.Before(g.cert().NotAfter) }

// Open loads the CA generations persisted in opts.Dir, creates the first
// one if there is none, and brings the timeline up to now. It refuses to
// start, saying what to fix, on anything it cannot trust: a data_dir that
// others own or may write to, unreadable, corrupt, mismatched or
// future-dated files, loose key permissions, another trust domain, an
// expired or unverifiable upstream certificate; and when no generation can
// sign. A successor that cannot be written while a valid generation
// remains is no reason to refuse: it is logged and reported by Health.
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
	if opts.RotateInterval <= 0 {
		opts.RotateInterval = time.Second
	}
	if opts.TTL <= 0 {
		return nil, fmt.Errorf("CA ttl %s must be positive", opts.TTL)
	}
	a := &Authority{
		td:            opts.TrustDomain,
		ttl:           opts.TTL,
		interval:      opts.RotateInterval,
		clock:         opts.Clock,
		rand:          opts.Rand,
		log:           opts.Log,
		metrics:       newMetrics(),
		bundleChanged: make(chan struct{}, 1),
		canSign:       true, // so that an Open with nothing valid logs it
	}
	switch {
	case opts.Upstream != nil && opts.UpstreamAuthority != nil:
		return nil, errors.New("CA: an upstream from files and an upstream authority exclude each other")
	case opts.Upstream != nil:
		up, err := loadUpstream(*opts.Upstream, a.td, a.clock())
		if err != nil {
			return nil, err
		}
		a.up = up
		a.store.dir = generationsDir(opts.Dir, RootUpstreamFiles)
	case opts.UpstreamAuthority != nil:
		a.store = store{dir: generationsDir(opts.Dir, RootUpstreamAuthority), withCA: true}
	default:
		a.store = store{dir: generationsDir(opts.Dir, RootSelfSigned), withCA: true}
	}
	if err := a.store.init(); err != nil {
		return nil, err
	}
	if opts.UpstreamAuthority != nil {
		r, err := newRemote(opts.UpstreamAuthority, a.td, a.ttl, opts.RootsRefresh, a.store.dir, a.metrics)
		if err != nil {
			return nil, err
		}
		a.up = r
	}

	gens, err := a.store.load()
	if err != nil {
		return nil, err
	}
	now := a.clock()
	for _, g := range gens {
		if err := a.adopt(g, now); err != nil {
			return nil, fmt.Errorf("CA generation %s: %w", a.store.path(g.name), err)
		}
	}
	a.gens = gens
	if a.up != nil && len(gens) > 0 {
		a.orphanLocked() // a.mu is not needed before Open returns
	}
	_, rotateErr := a.Rotate()
	active, _, err := a.signer()
	if err != nil {
		return nil, err
	}
	// Whoever opened the CA reads the bundles next; only later changes are
	// news to them.
	select {
	case <-a.bundleChanged:
	default:
	}
	if err := a.metrics.register(opts.Metrics, opts.UpstreamAuthority != nil); err != nil {
		return nil, err
	}
	a.log.Info("CA ready", "trust_domain", a.td, "active", active.name,
		"expires", active.cert().NotAfter, "generations", len(a.gens), "upstream", a.upstreamName(),
		"rotation_failing", rotateErr != nil)
	return a, nil
}

// upstreamName says where the CA's certificates come from, for logs.
func (a *Authority) upstreamName() string {
	switch up := a.up.(type) {
	case nil:
		return "self-signed"
	case *remoteCA:
		return up.ua.String()
	default:
		return "files"
	}
}

// adopt checks a generation loaded from disk and lets an upstream check
// or complete it.
func (a *Authority) adopt(g *generation, now time.Time) error {
	if a.up != nil {
		return a.up.adopt(g, now)
	}
	if err := checkCA(g.cert(), g.key, a.td); err != nil {
		return err
	}
	// This node backdates what it creates; a start in the future means the
	// clock went back or someone else put the file there.
	if nb := g.cert().NotBefore; nb.After(now.Add(backdate)) {
		return fmt.Errorf("%s is not valid before %s, %s from now: fix the system clock, or remove %s if the file did not come from this node",
			certFile, nb.Format(time.RFC3339), nb.Sub(now).Round(time.Second), a.store.path(g.name))
	}
	return nil
}

// signer returns the generation that signs now, and now; or why none can.
func (a *Authority) signer() (*generation, time.Time, error) {
	now := a.clock()
	a.mu.RLock()
	defer a.mu.RUnlock()
	if g := a.activeLocked(now); g != nil {
		return g, now, nil
	}
	return nil, now, a.noValidLocked()
}

// X509Bundle returns the roots peers must trust: every listed self-signed
// generation, or the upstream roots.
func (a *Authority) X509Bundle() *x509bundle.Bundle {
	if a.up != nil {
		return x509bundle.FromX509Authorities(a.td, a.up.roots())
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	roots := make([]*x509.Certificate, len(a.gens))
	for i, g := range a.gens {
		roots[i] = g.cert()
	}
	return x509bundle.FromX509Authorities(a.td, roots)
}

// JWTBundle returns the public keys of every listed generation's JWT
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

// Certificate returns the certificate of the CA that signs now or, when
// none is valid (see Health), of the newest, expired one.
func (a *Authority) Certificate() *x509.Certificate {
	now := a.clock()
	a.mu.RLock()
	defer a.mu.RUnlock()
	if g := a.activeLocked(now); g != nil {
		return g.cert()
	}
	return a.gens[len(a.gens)-1].cert()
}

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
