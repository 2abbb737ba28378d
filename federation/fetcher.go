package federation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/internal/atomicfile"
)

// Refresh bounds: a hint outside them is clamped, so a remote endpoint can
// neither make every node poll it in a loop nor stop them for days.
const (
	MinRefresh = time.Second
	MaxRefresh = time.Hour
	// fetchTimeout bounds one fetch, connection and body included.
	fetchTimeout = 30 * time.Second
	// maxRetry is the longest wait between failed fetches.
	maxRetry = 5 * time.Minute
)

// FetchOptions configures a Fetcher for one other trust domain.
type FetchOptions struct {
	TrustDomain spiffeid.TrustDomain
	URL         string
	// EndpointID selects the https_spiffe profile: the endpoint must present
	// an SVID with this ID, verified against the bundle as last fetched.
	// Zero selects https_web, verified against WebRoots (nil: the system's).
	EndpointID spiffeid.ID
	WebRoots   *x509.CertPool
	// Bootstrap is the bundle to start from when none was fetched before
	// (federation.bundles[].bundle_file); nil for none.
	Bootstrap *spiffebundle.Bundle
	// StoreFile keeps the last bundle fetched, as a SPIFFE bundle.
	StoreFile string
	// Own is this node's CA: an endpoint that serves its roots (a URL
	// pointing back at this trust domain) is refused. Nil skips the check.
	Own BundleSource
	// DefaultRefresh applies to bundles without a refresh hint; zero: 5m.
	DefaultRefresh time.Duration
	Log            *slog.Logger
	Metrics        *Metrics
}

// Fetcher keeps one federated trust domain's bundle: the last good one
// always stays, on disk too; a failed fetch is retried with backoff.
type Fetcher struct {
	o       FetchOptions
	current *spiffebundle.Bundle // read and written by Run's goroutine only, after New
	// updated receives every bundle accepted after New.
	updated func(*spiffebundle.Bundle)
	clock   func() time.Time
}

// NewFetcher starts from the stored bundle if there is one, else from
// o.Bootstrap. With https_spiffe it needs one of them: the endpoint's SVID
// can only be verified against that domain's roots.
func NewFetcher(o FetchOptions, updated func(*spiffebundle.Bundle)) (*Fetcher, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.DefaultRefresh == 0 {
		o.DefaultRefresh = 5 * time.Minute
	}
	f := &Fetcher{o: o, updated: updated, clock: time.Now}
	stored, err := f.load()
	switch {
	case err != nil:
		return nil, err
	case stored != nil:
		f.current = stored
		o.Metrics.setAge(o.TrustDomain, f.storedAt())
	case o.Bootstrap != nil:
		f.current = o.Bootstrap
	case !o.EndpointID.IsZero():
		return nil, fmt.Errorf("federation: %s: https_spiffe needs a bootstrap bundle to verify %s with: set bundle_file (nothing was fetched before into %s)",
			o.TrustDomain.Name(), o.EndpointID, o.StoreFile)
	}
	return f, nil
}

// Current is the bundle to start with: stored, or bootstrap; nil when
// there is neither and https_web will fetch the first one.
func (f *Fetcher) Current() *spiffebundle.Bundle { return f.current }

// load reads StoreFile; a missing file is no error, an unreadable or
// malformed one is (it was written by meshid: something is wrong).
func (f *Fetcher) load() (*spiffebundle.Bundle, error) {
	data, err := os.ReadFile(f.o.StoreFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("federation: %s: stored bundle: %w", f.o.TrustDomain.Name(), err)
	}
	b, err := spiffebundle.Parse(f.o.TrustDomain, data)
	if err != nil {
		return nil, fmt.Errorf("federation: %s: stored bundle %s: %w (remove it to start from bundle_file)", f.o.TrustDomain.Name(), f.o.StoreFile, err)
	}
	return b, nil
}

// storedAt is when the stored bundle was last fetched (or found unchanged).
func (f *Fetcher) storedAt() time.Time {
	if fi, err := os.Stat(f.o.StoreFile); err == nil {
		return fi.ModTime()
	}
	return f.clock()
}

// Run fetches now, then again after each bundle's refresh hint (after a
// backoff when a fetch fails), until ctx ends.
func (f *Fetcher) Run(ctx context.Context) error {
	failures := 0
	for {
		var wait time.Duration
		err := f.fetchOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return nil //nolint:nilerr // stopping: a fetch cut short is no failure
		case err != nil:
			failures++
			wait = min(MinRefresh<<min(failures-1, 16), maxRetry, f.refreshInterval())
			wait += time.Duration(rand.Int64N(int64(wait)/5 + 1))
			f.o.Metrics.failed(f.o.TrustDomain)
			f.o.Log.Warn("federation: bundle refresh failed; keeping the last good bundle",
				"trust_domain", f.o.TrustDomain.Name(), "url", f.o.URL, "failures", failures, "retry_in", wait.Round(time.Millisecond), "err", err)
		default:
			failures = 0
			wait = f.refreshInterval()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// refreshInterval is the current bundle's hint, clamped, or the default.
func (f *Fetcher) refreshInterval() time.Duration {
	if f.current != nil {
		if hint, ok := f.current.RefreshHint(); ok {
			return min(max(hint, MinRefresh), MaxRefresh)
		}
	}
	return f.o.DefaultRefresh
}

// fetchOnce fetches, checks and, if it passes, stores and hands on the
// bundle.
func (f *Fetcher) fetchOnce(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	var auth federation.FetchOption
	profile := "https_web"
	if f.o.EndpointID.IsZero() {
		roots := f.o.WebRoots
		if roots == nil {
			var err error
			if roots, err = x509.SystemCertPool(); err != nil {
				return fmt.Errorf("system roots: %w", err)
			}
		}
		auth = federation.WithWebPKIRoots(roots)
	} else {
		auth = federation.WithSPIFFEAuth(x509bundle.NewSet(f.current.X509Bundle()), f.o.EndpointID)
		profile = "https_spiffe, expecting " + f.o.EndpointID.String()
	}
	b, err := federation.FetchBundle(ctx, f.o.TrustDomain, f.o.URL, auth)
	if err != nil {
		return fmt.Errorf("fetch (%s): %w", profile, err)
	}
	if err := f.check(b); err != nil {
		return err
	}
	if f.current != nil && f.current.Equal(b) {
		f.touch()
		return nil
	}
	data, err := b.Marshal()
	if err != nil {
		return err
	}
	if err := atomicfile.Write(f.o.StoreFile, data, 0o644); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	f.o.Metrics.setAge(f.o.TrustDomain, f.clock())
	f.warnRollback(b)
	f.current = b
	f.o.Log.Info("federation: bundle updated from its endpoint", "trust_domain", f.o.TrustDomain.Name(),
		"x509_roots", len(b.X509Authorities()), "jwt_keys", len(b.JWTAuthorities()), "refresh", f.refreshInterval())
	if f.updated != nil {
		f.updated(b)
	}
	return nil
}

// warnRollback warns when b's sequence number is below the current one's.
// It accepts b all the same: a partner that lost its state starts again
// at 1, and refusing would cut the federation until an operator stepped in.
func (f *Fetcher) warnRollback(b *spiffebundle.Bundle) {
	if f.current == nil {
		return
	}
	prev, ok1 := f.current.SequenceNumber()
	seq, ok2 := b.SequenceNumber()
	if ok1 && ok2 && seq < prev {
		f.o.Log.Warn("federation: the endpoint's sequence number went back: accepted, but check that its trust domain was not reset or rolled back",
			"trust_domain", f.o.TrustDomain.Name(), "was", prev, "now", seq)
	}
}

// touch records a fetch that found nothing new: the bundle is as fresh as
// the fetch.
func (f *Fetcher) touch() {
	now := f.clock()
	if err := os.Chtimes(f.o.StoreFile, now, now); err == nil {
		f.o.Metrics.setAge(f.o.TrustDomain, now)
	}
}

// check refuses a bundle that trusts nothing, holds roots that are not CA
// certificates, or is this node's own trust domain's (an endpoint URL that
// points back here would make a partner of ourselves).
func (f *Fetcher) check(b *spiffebundle.Bundle) error {
	if b.Empty() {
		return errors.New("the endpoint served a bundle with no X.509 root and no JWT key")
	}
	for _, c := range b.X509Authorities() {
		if !c.IsCA {
			return fmt.Errorf("the endpoint's bundle holds %q, which is not a CA certificate", c.Subject)
		}
	}
	if f.o.Own == nil {
		return nil
	}
	own := f.o.Own.X509Bundle()
	for _, c := range b.X509Authorities() {
		if own.HasX509Authority(c) {
			return fmt.Errorf("the endpoint served this node's own trust domain's root %q: endpoint_url points at %s, not at %s", c.Subject, own.TrustDomain().Name(), f.o.TrustDomain.Name())
		}
	}
	return nil
}
