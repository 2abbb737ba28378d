package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/meshid/meshid/internal/atomicfile"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// UpstreamAuthority is a PKI that holds the trust domain's root and signs
// this node's intermediate CAs, such as a Vault or OpenBao PKI mount
// (package ca/vault). meshid generates each intermediate's key itself and
// sends only a certificate request: the key never leaves the node.
type UpstreamAuthority interface {
	// SignIntermediate has csr (PKCS#10, DER) signed as a CA certificate
	// valid for ttl, and returns the intermediate first, then any
	// certificates between it and a root.
	SignIntermediate(ctx context.Context, csr []byte, ttl time.Duration) ([]*x509.Certificate, error)
	// Roots returns every root the upstream signs with or still trusts:
	// after a root rotation, the old and the new one.
	Roots(ctx context.Context) ([]*x509.Certificate, error)
	// String names the upstream in logs and errors.
	String() string
}

// Timing of a remote upstream. Renewal starts between 45 % and 55 % of an
// intermediate's life (the point is set by the certificate's serial, so a
// restart keeps it and nodes issued at the same moment spread out); a
// failed call is retried after a backoff that doubles from retryMin to
// retryMax, each wait jittered down by up to half, and never longer than
// a tenth of the newest intermediate's remaining life (an upstream may
// sign for less than was asked: a role's max_ttl of minutes would
// otherwise leave only a few tries before it expires).
const (
	renewFrom, renewSpread = 0.45, 0.10
	retryMin               = 2 * time.Second
	retryMax               = 5 * time.Minute
	callTimeout            = 30 * time.Second
	rootsFile              = "roots.crt"
	// DefaultRootsRefresh is how often the upstream's roots are read
	// between renewals, so that a root rotation reaches the bundle.
	DefaultRootsRefresh = 5 * time.Minute
)

// remoteCA is an upstream that signs this node's intermediates on
// request: every generation is a fresh key and an intermediate the
// upstream signed for it, kept in the store like a self-signed one, and
// the bundle is the upstream's roots, refreshed on each renewal and every
// refresh interval and kept in the store for a restart with the upstream
// down.
type remoteCA struct {
	ua      UpstreamAuthority
	td      spiffeid.TrustDomain
	ttl     time.Duration
	refresh time.Duration
	dir     string // the store's directory, where rootsFile is kept
	metrics metrics

	mu      sync.Mutex // current is read by X509Bundle while rotations write it
	current []*x509.Certificate

	// The rest is the rotation's own (Authority.rotateMu).
	nextPoll  time.Time
	nextTry   time.Time // no renewal attempt before, after a failure
	renewNow  bool      // the roots changed to ones the newest generation does not chain to
	backoff   time.Duration
	lastError error     // of the last renewal attempt, repeated until nextTry
	expires   time.Time // the newest intermediate's NotAfter, which bounds a wait
}

func newRemote(ua UpstreamAuthority, td spiffeid.TrustDomain, ttl, refresh time.Duration, dir string, m metrics) (*remoteCA, error) {
	if refresh <= 0 {
		refresh = DefaultRootsRefresh
	}
	r := &remoteCA{ua: ua, td: td, ttl: ttl, refresh: refresh, dir: dir, metrics: m}
	data, err := os.ReadFile(filepath.Join(dir, rootsFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("upstream roots: %w", err)
	default:
		if r.current, err = parseCerts(data); err != nil {
			return nil, fmt.Errorf("upstream roots %s: %w (remove it to read them from %s again)", filepath.Join(dir, rootsFile), err, ua)
		}
	}
	return r, nil
}

func (r *remoteCA) roots() []*x509.Certificate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current
}

func (r *remoteCA) adopt(g *generation, now time.Time) error {
	if err := checkCA(g.cert(), g.key, r.td); err != nil {
		return err
	}
	if len(r.roots()) == 0 {
		return fmt.Errorf("the upstream roots (%s) are missing; remove the generation to ask %s for a new intermediate", rootsFile, r.ua)
	}
	return nil
}

// renewAt returns when g's successor is requested.
func renewAt(g *generation) time.Time {
	sum := sha256.Sum256(g.cert().SerialNumber.Bytes())
	frac := renewFrom + renewSpread*float64(binary.BigEndian.Uint16(sum[:2]))/65535
	c := g.cert()
	return c.NotBefore.Add(time.Duration(float64(c.NotAfter.Sub(c.NotBefore)) * frac))
}

// due says whether newest needs a successor now: from its renewal point,
// at once when the upstream's roots no longer include the one it chains
// to (see poll), and never during a backoff, when the last failure
// stands.
func (r *remoteCA) due(newest *generation, now time.Time) (bool, error) {
	r.expires = newest.cert().NotAfter
	if now.Before(r.nextTry) {
		return false, r.lastError
	}
	return r.renewNow || !now.Before(renewAt(newest)), nil
}

// issue makes a new generation's CA: a fresh P-256 key, a certificate
// request for it naming the trust domain, signed by the upstream, and
// checked before anything is kept. The roots are read first: they are
// needed to check the answer, and a mount that is not a PKI fails there
// before it is sent anything.
func (r *remoteCA) issue(ctx context.Context, g *generation, now time.Time, rand io.Reader) error {
	err := r.issueOnce(ctx, g, now, rand)
	r.record(now, err, rand)
	return err
}

func (r *remoteCA) issueOnce(ctx context.Context, g *generation, now time.Time, rand io.Reader) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	roots, err := r.fetchRoots(ctx, now)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand, &x509.CertificateRequest{
		Subject: pkix.Name{Organization: []string{"meshid"}, CommonName: r.td.Name() + " intermediate CA"},
		URIs:    []*url.URL{r.td.ID().URL()},
	}, key)
	if err != nil {
		return fmt.Errorf("certificate request: %w", err)
	}
	chain, err := r.ua.SignIntermediate(ctx, csr, r.ttl)
	if err != nil {
		r.metrics.upstreamFailures.Inc()
		return err
	}
	if err := checkIssued(chain, key, r.td, roots, now); err != nil {
		// The roots were read before the signing: a root rotated in
		// between (or an engine that lists its issuers a moment behind
		// the one it signs with) leaves the answer under a root meshid
		// has not read yet. The roots are read once more before the
		// answer is refused.
		fresh, ferr := r.fetchRoots(ctx, now)
		if ferr != nil || sameCerts(fresh, roots) || checkIssued(chain, key, r.td, fresh, now) != nil {
			r.metrics.upstreamFailures.Inc()
			return fmt.Errorf("%s returned an intermediate meshid refuses: %w", r.ua, err)
		}
		roots = fresh
	}
	g.chain, g.key = slices.Clip(chain), key
	if err := r.keepRoots(roots, now); err != nil {
		return err
	}
	r.renewNow = false
	return nil
}

// record keeps the outcome of a renewal attempt: a failure starts or
// doubles the backoff, a success clears it.
func (r *remoteCA) record(now time.Time, err error, rand io.Reader) {
	if err == nil {
		r.backoff, r.nextTry, r.lastError = 0, time.Time{}, nil
		return
	}
	r.backoff = min(max(2*r.backoff, retryMin), retryMax)
	var b [2]byte
	_, _ = rand.Read(b[:]) // a failed read leaves no jitter, which is still a backoff
	jitter := time.Duration(float64(r.backoff/2) * float64(binary.BigEndian.Uint16(b[:])) / 65535)
	wait := r.backoff - jitter
	if left := r.expires.Sub(now); left > 0 {
		wait = min(wait, max(left/10, retryMin))
	}
	r.nextTry, r.lastError = now.Add(wait), err
}

// poll reads the upstream's roots when the refresh interval has passed,
// and reports whether they changed. Roots that newest does not chain to
// are not taken alone: they would orphan every generation and leave
// nothing to sign with. They make a renewal due instead, which takes them
// together with an intermediate that chains to them, or keeps the last
// good roots and intermediate when the upstream's answer does not verify.
func (r *remoteCA) poll(ctx context.Context, newest *generation, now time.Time, rand io.Reader) (bool, error) {
	if newest == nil || now.Before(r.nextPoll) {
		return false, nil // with no generation yet, issue reads the roots itself
	}
	r.expires = newest.cert().NotAfter
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	before := r.roots()
	roots, err := r.fetchRoots(ctx, now)
	if err != nil {
		// An upstream that is down is asked again on the same backoff as
		// a renewal, which waits for it too.
		r.record(now, err, rand)
		r.nextPoll = r.nextTry
		return false, err
	}
	if !chainsTo(newest, roots) {
		r.nextPoll, r.renewNow = now.Add(r.refresh), true
		return false, nil
	}
	if err := r.keepRoots(roots, now); err != nil {
		return false, err
	}
	return !sameCerts(before, roots), nil
}

// fetchRoots reads the upstream's roots and drops the expired ones.
func (r *remoteCA) fetchRoots(ctx context.Context, now time.Time) ([]*x509.Certificate, error) {
	roots, err := r.ua.Roots(ctx)
	if err != nil {
		r.metrics.upstreamFailures.Inc()
		return nil, err
	}
	roots = slices.DeleteFunc(slices.Clone(roots), func(c *x509.Certificate) bool { return !now.Before(c.NotAfter) })
	if len(roots) == 0 {
		r.metrics.upstreamFailures.Inc()
		return nil, fmt.Errorf("%s has no root valid now", r.ua)
	}
	return roots, nil
}

// keepRoots makes roots the bundle and writes them to the store when
// they changed.
func (r *remoteCA) keepRoots(roots []*x509.Certificate, now time.Time) error {
	r.nextPoll = now.Add(r.refresh)
	if sameCerts(roots, r.roots()) {
		return nil
	}
	if err := atomicfile.Write(filepath.Join(r.dir, rootsFile), certPEM(roots...), 0o644); err != nil {
		return fmt.Errorf("keep the upstream roots: %w", err)
	}
	r.mu.Lock()
	r.current = roots
	r.mu.Unlock()
	return nil
}

// tolerates says whether a failing upstream leaves the CA healthy: it does
// until newest's successor should sign (5/6 of its life), by when an
// outage has outlasted the third of a life the timeline leaves for it.
func (r *remoteCA) tolerates(newest *generation, now time.Time) bool {
	return now.Before(newest.lifeAt(5, 6))
}

// checkIssued checks what the upstream returned for key: a CA certificate
// of this trust domain for that very key, valid now, chaining to one of
// the upstream's roots.
func checkIssued(chain []*x509.Certificate, key crypto.Signer, td spiffeid.TrustDomain, roots []*x509.Certificate, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("no certificate")
	}
	cert := chain[0]
	if !cert.IsCA {
		return errors.New("certificate is not a CA")
	}
	if err := checkTrustDomain(cert, td); err != nil {
		return fmt.Errorf("for another trust domain: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return errors.New("certificate is not for the key meshid sent")
	}
	if !now.Before(cert.NotAfter) || now.Before(cert.NotBefore.Add(-backdate)) {
		return fmt.Errorf("not valid now: from %s to %s", cert.NotBefore.Format(time.RFC3339), cert.NotAfter.Format(time.RFC3339))
	}
	return verifyChain(chain, roots, now)
}

// verifyChain checks that chain[0] chains to one of roots at now.
func verifyChain(chain, roots []*x509.Certificate, now time.Time) error {
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         pool(roots),
		Intermediates: pool(chain[1:]),
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("does not chain to the upstream's roots: %w", err)
	}
	return nil
}

// chainsTo says whether g's chain ends under one of roots (by signature:
// whether it is valid now is verifyChain's question).
func chainsTo(g *generation, roots []*x509.Certificate) bool {
	top := g.chain[len(g.chain)-1]
	return slices.ContainsFunc(roots, func(r *x509.Certificate) bool {
		return top.Equal(r) || top.CheckSignatureFrom(r) == nil
	})
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return bytes.Equal(x.Raw, y.Raw) })
}
