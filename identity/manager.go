// Package identity decides who gets which SPIFFE identity: it holds the
// entries, matches attested callers against them, keeps the issued SVIDs
// (the workloads' and meshid's own) fresh under one renewal rule and tells
// every watcher when its identities change. It never speaks a wire
// protocol nor looks at a connection: it is handed the kernel's view of a
// caller, and sds and workload speak to the caller through the
// Subscription it returns. It never signs anything either; the Minter does,
// on the CA's own clock.
package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/internal/echo"
)

// Minter issues SVIDs and publishes the trust bundles; *ca.Authority is
// one. It keeps its own keys on schedule (and logs its own failures):
// identity only hears when the bundles changed.
type Minter interface {
	MintX509SVID(ca.SVIDRequest) (*x509svid.SVID, error)
	MintJWTSVID(ca.JWTRequest) (*ca.JWTSVID, error)
	X509Bundle() *x509bundle.Bundle
	JWTBundle() *jwtbundle.Bundle
	// BundleChanged is signalled after the bundles changed; signals
	// coalesce.
	BundleChanged() <-chan struct{}
}

// Attestor turns the kernel's view of a caller into selectors.
type Attestor interface {
	Attest(context.Context, attestor.Caller) ([]attestor.Selector, error)
}

// Options configures a Manager.
type Options struct {
	Entries       []Entry
	DefaultTTL    time.Duration // of X509-SVIDs
	DefaultJWTTTL time.Duration
	Minter        Minter
	Attestor      Attestor
	Clock         func() time.Time
	// Jitter returns a number in [-1, 1) that spreads renewals by ±10% of
	// half an SVID's life, so a node's SVIDs do not all renew at once.
	// Nil uses math/rand.
	Jitter func() float64
	Log    *slog.Logger

	// EntriesFile and TrustDomain are where WatchEntries and ReloadEntries
	// read the entries from, and what they check them against.
	EntriesFile string
	TrustDomain spiffeid.TrustDomain
	// ReloadInterval is how often WatchEntries looks at the file even
	// without a change notice; zero means 5s.
	ReloadInterval time.Duration
	// Metrics, when set, receives the manager's metrics.
	Metrics prometheus.Registerer
	// Federated holds other trust domains' bundles; a caller gets those its
	// entries federate with: their X.509 roots (SDS, FetchX509SVID) and
	// their JWT keys (FetchJWTBundles, ValidateJWTSVID), whichever the
	// bundle has. Nil means none.
	Federated *spiffebundle.Set
}

// maxCachedJWTs and maxCachedJWTBytes bound the JWT-SVID cache: audiences
// come from callers, so a caller asking for ever new ones, or for huge
// ones (a token carries its audiences), must not grow it without limit.
// Past either bound tokens are still issued, only not cached.
const (
	maxCachedJWTs     = 4096
	maxCachedJWTBytes = 4 << 20
)

// Manager is the node's identity authority.
type Manager struct {
	defaultTTL    time.Duration
	defaultJWTTTL time.Duration
	minter        Minter
	attestor      Attestor
	clock         func() time.Time
	jitter        func() float64
	log           *slog.Logger

	entriesFile   string
	trustDomain   spiffeid.TrustDomain
	federated     *spiffebundle.Set // never nil; every configured trust domain
	federatedX509 *x509bundle.Set   // those of federated with X.509 roots
	federatedJWT  *jwtbundle.Set    // those of federated with JWT keys
	// federatedSet is when each federated bundle was put in force (at
	// start, or by SetFederatedBundle), by trust domain; guarded by mu.
	federatedSet   map[string]time.Time
	reloadInterval time.Duration
	reload         reloadState
	metrics        metrics
	refusals       *refusalLog

	mu      sync.Mutex
	entries []Entry // replaced whole by SetEntries, never changed in place
	svids   map[svidKey]*issued
	jwts    map[jwtKey]*ca.JWTSVID
	// jwtBytes is the size of jwts as jwtCost counts it.
	jwtBytes int
	subs     map[*Subscription]struct{}
	// The mints under way, one per key (see svids.go).
	minting    map[svidKey]*flight[*x509svid.SVID]
	mintingJWT map[jwtKey]*flight[*ca.JWTSVID]
}

// NewManager returns a Manager for a fixed set of entries.
func NewManager(o Options) *Manager {
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Federated == nil {
		o.Federated = spiffebundle.NewSet()
	}
	if o.Jitter == nil {
		o.Jitter = func() float64 { return rand.Float64()*2 - 1 }
	}
	if o.ReloadInterval == 0 {
		o.ReloadInterval = 5 * time.Second
	}
	m := &Manager{
		entries:       o.Entries,
		defaultTTL:    o.DefaultTTL,
		defaultJWTTTL: o.DefaultJWTTTL,
		minter:        o.Minter,
		attestor:      o.Attestor,
		clock:         o.Clock,
		jitter:        o.Jitter,
		log:           o.Log,
		svids:         map[svidKey]*issued{},
		jwts:          map[jwtKey]*ca.JWTSVID{},
		subs:          map[*Subscription]struct{}{},
		minting:       map[svidKey]*flight[*x509svid.SVID]{},
		mintingJWT:    map[jwtKey]*flight[*ca.JWTSVID]{},

		entriesFile:    o.EntriesFile,
		trustDomain:    o.TrustDomain,
		federated:      o.Federated,
		federatedX509:  x509bundle.NewSet(),
		federatedJWT:   jwtbundle.NewSet(),
		reloadInterval: o.ReloadInterval,
		refusals:       newRefusalLog(o.Log, o.Clock),
	}
	// A trust domain may come with only one kind of key (a partner whose
	// JWT-SVIDs alone are accepted has no roots here): split them once, so
	// no caller is ever handed an empty bundle. SDS would put an empty one
	// in a validation context (an empty trusted_ca or SPIFFE trust bundle,
	// for Envoy to reject or trust nothing with) and the Workload API would
	// send a federated domain without roots.
	m.federatedSet = map[string]time.Time{}
	for _, b := range o.Federated.Bundles() {
		m.federatedSet[b.TrustDomain().Name()] = o.Clock()
		if len(b.X509Authorities()) > 0 {
			m.federatedX509.Add(b.X509Bundle())
		}
		if len(b.JWTAuthorities()) > 0 {
			m.federatedJWT.Add(b.JWTBundle())
		}
	}
	m.metrics = newMetrics(o.Metrics, m.earliestExpiry)
	m.metrics.entries.Set(float64(len(o.Entries)))
	return m
}

// Watch attests the caller (the kernel's view of it, never what it sent)
// and subscribes it to its identities; ctx only bounds the attestation. A
// caller no entry matches gets a subscription with no SVIDs; the protocol
// front door turns that into its own refusal. Close the subscription when
// done. Refusals are counted one by one but logged at most once per
// refusalInterval for each uid and reason.
func (m *Manager) Watch(ctx context.Context, caller attestor.Caller) (*Subscription, error) {
	sels, err := m.attestor.Attest(ctx, caller)
	if err != nil {
		reason := attestor.Reason(err)
		m.metrics.attestFailures.WithLabelValues(reason).Inc()
		m.refusals.warn(caller.UID, reason, "attestation failed: the caller gets no identity",
			"pid", caller.PID, "uid", caller.UID, "reason", reason, "err", err)
		return nil, fmt.Errorf("attest caller (pid %d, uid %d): %w", caller.PID, caller.UID, err)
	}
	sub := &Subscription{m: m, caller: caller, selectors: sels, changed: make(chan struct{}, 1)}
	m.mu.Lock()
	matched, unfit := matching(m.entries, sels)
	sub.entries = matched
	m.subs[sub] = struct{}{}
	m.mu.Unlock()
	m.refuseUnfit(caller, unfit)
	if len(matched) == 0 {
		m.metrics.unmatched.Inc()
		m.refusals.warn(caller.UID, reasonNoEntry, "no entry matches caller: it gets no identity",
			"pid", caller.PID, "uid", caller.UID, "gid", caller.GID, "selectors", loggedSelectors(sels))
	} else {
		m.log.Info("caller attested", "pid", caller.PID, "uid", caller.UID,
			"selectors", loggedSelectors(sels), "spiffe_ids", idList(matched))
	}
	return sub, nil
}

// matching returns the entries, in file order, that a caller with sels
// satisfies, template entries filled in for it, and why each template
// entry it satisfies but cannot get an ID from (see Entry.For) gives it
// nothing.
func matching(entries []Entry, sels []attestor.Selector) (matched []Entry, unfit []error) {
	for _, e := range entries {
		switch filled, ok, err := e.For(sels); {
		case err != nil:
			unfit = append(unfit, fmt.Errorf("%s: %w", e.Source, err))
		case ok:
			matched = append(matched, filled)
		}
	}
	return matched, unfit
}

// reasonTemplate is the refusal of an ID from a template entry whose
// placeholder the caller's value cannot fill.
const reasonTemplate = "template_value_invalid"

// refuseUnfit logs, paced as every refusal, why template entries the
// caller matched give it nothing: its values are the caller's own (a
// label), so they are clipped.
func (m *Manager) refuseUnfit(caller attestor.Caller, unfit []error) {
	for _, err := range unfit {
		m.refusals.warn(caller.UID, reasonTemplate, "template entry gives the caller no identity",
			"pid", caller.PID, "uid", caller.UID, "err", echo.Clip(err.Error(), 2*maxEcho))
	}
}

// SetEntries puts a new set of entries in force for new and existing
// callers alike. Every subscription is matched again from the selectors
// its caller was attested with, and told when its SVIDs change (possibly
// to none: its entry was removed). SVIDs no entry asks for any more stop
// being renewed; meshid's own (Self) are kept.
func (m *Manager) SetEntries(entries []Entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries = entries
	m.metrics.entries.Set(float64(len(entries)))
	// What each caller gets now; a template entry's IDs are those of its
	// callers, so the SVIDs wanted are those of fixed entries and those
	// some caller holds.
	now := make(map[*Subscription][]Entry, len(m.subs))
	for sub := range m.subs {
		matched, unfit := matching(entries, sub.selectors)
		now[sub] = matched
		m.refuseUnfit(sub.caller, unfit)
	}
	wanted := map[svidKey]bool{}
	ids := map[string]bool{}
	for _, e := range slices.Concat(append(slices.Collect(maps.Values(now)), entries)...) {
		if e.SPIFFEID.IsZero() {
			continue // a template entry as loaded
		}
		k, _ := m.request(e)
		wanted[k] = true
		ids[k.id] = true
	}
	for k := range m.svids {
		if !wanted[k] && !k.self {
			delete(m.svids, k)
		}
	}
	// A mint under way for a key dropped here still answers whoever asked,
	// but is not cached: taken off minting, it is no longer the key's.
	for k := range m.minting {
		if !wanted[k] && !k.self {
			delete(m.minting, k)
		}
	}
	for k := range m.jwts {
		if !ids[k.id] {
			m.dropJWTLocked(k)
		}
	}
	for k := range m.mintingJWT {
		if !ids[k.id] {
			delete(m.mintingJWT, k)
		}
	}
	for sub, matched := range now {
		before, after := m.svidKeys(sub.entries), m.svidKeys(matched)
		sameBundles := slices.Equal(federatedWith(sub.entries), federatedWith(matched))
		sub.entries = matched
		if slices.Equal(before, after) && sameBundles {
			continue
		}
		m.log.Info("entries changed the caller's identities", "pid", sub.caller.PID, "uid", sub.caller.UID,
			"before", keyIDs(before), "after", keyIDs(after))
		sub.notify()
	}
}

func (m *Manager) svidKeys(entries []Entry) []svidKey {
	keys := make([]svidKey, len(entries))
	for i, e := range entries {
		keys[i], _ = m.request(e)
	}
	return keys
}

func keyIDs(keys []svidKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.id
	}
	return out
}

// Entries returns the entries in force.
func (m *Manager) Entries() []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.entries
}

// Run keeps SVIDs fresh and tells subscribers of every change, its own
// renewals and the CA's new bundles, until ctx ends. Current renews on
// demand as well, so a late tick (a suspended machine) never lets an
// expired SVID out.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			m.renewDue()
		case <-m.minter.BundleChanged():
			m.bundleChanged()
		}
	}
}

// bundleChanged tells every subscriber: every caller holds the own trust
// domain's bundle.
func (m *Manager) bundleChanged() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for sub := range m.subs {
		sub.notify()
	}
}

// unsubscribe forgets s and the SVIDs only it held from template entries:
// those are as many as the callers' values, which callers may choose, so
// they are kept only while a caller holds them (fixed entries' SVIDs are
// kept while the entry is in force).
func (m *Manager) unsubscribe(s *Subscription) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.subs, s)
	for _, e := range s.entries {
		if e.Template == nil {
			continue
		}
		k, _ := m.request(e)
		if m.heldLocked(k) {
			continue
		}
		delete(m.svids, k)
		delete(m.minting, k)
		for jk := range m.jwts {
			if jk.id == k.id {
				m.dropJWTLocked(jk)
			}
		}
		for jk := range m.mintingJWT {
			if jk.id == k.id {
				delete(m.mintingJWT, jk)
			}
		}
	}
}

// heldLocked reports whether a fixed entry in force or a subscriber asks
// for k.
func (m *Manager) heldLocked(k svidKey) bool {
	asks := func(e Entry) bool { ek, _ := m.request(e); return !e.SPIFFEID.IsZero() && ek == k }
	if slices.ContainsFunc(m.entries, asks) {
		return true
	}
	for sub := range m.subs {
		if slices.ContainsFunc(sub.entries, asks) {
			return true
		}
	}
	return false
}

// Subscription is one caller's live view of its identities.
type Subscription struct {
	m         *Manager
	caller    attestor.Caller
	selectors []attestor.Selector // as attested when it subscribed
	entries   []Entry             // guarded by m.mu: SetEntries replaces it
	changed   chan struct{}
}

// matched returns the entries the caller is entitled to now.
func (s *Subscription) matched() []Entry {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.entries
}

// Changed receives a value whenever Current would return something new.
// Signals coalesce: a slow reader sees one signal and reads the latest
// state, so it never holds up the others.
func (s *Subscription) Changed() <-chan struct{} { return s.changed }

// Exited is closed once the caller's process has exited (see
// attestor.Caller.Exited). The subscription goes on answering; the front
// doors end the caller's streams then, and serve it nothing more: whoever
// holds its connection afterwards was never attested.
func (s *Subscription) Exited() <-chan struct{} { return s.caller.Exited() }

func (s *Subscription) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Current returns the caller's SVIDs, in entry order, and the bundles it
// may use. No SVIDs means no entry matches the caller.
func (s *Subscription) Current() (*workloadapi.X509Context, error) {
	x := &workloadapi.X509Context{Bundles: x509bundle.NewSet(s.m.minter.X509Bundle())}
	for _, e := range s.matched() {
		svid, err := s.m.svidFor(e)
		if err != nil {
			return nil, fmt.Errorf("issue %s: %w", e.SPIFFEID, err)
		}
		x.SVIDs = append(x.SVIDs, svid)
		for _, td := range e.FederatesWith {
			if b, ok := s.m.federatedX509.Get(td); ok {
				x.Bundles.Add(b)
			}
		}
	}
	return x, nil
}

// JWTSVIDs returns a JWT-SVID for audience for each of the caller's
// identities, in entry order.
func (s *Subscription) JWTSVIDs(audience []string) ([]*ca.JWTSVID, error) {
	if len(audience) == 0 {
		return nil, errors.New("at least one audience is required")
	}
	entries := s.matched()
	out := make([]*ca.JWTSVID, 0, len(entries))
	for _, e := range entries {
		svid, err := s.m.jwtFor(e, audience)
		if err != nil {
			return nil, fmt.Errorf("issue JWT for %s: %w", e.SPIFFEID, err)
		}
		out = append(out, svid)
	}
	return out, nil
}

// JWTBundles returns the JWT bundles the caller may validate with: its own
// trust domain's and those of the trust domains its entries federate with,
// the same rule as for X.509 roots. A caller no entry matches gets the own
// one only.
func (s *Subscription) JWTBundles() *jwtbundle.Set {
	set := jwtbundle.NewSet(s.m.minter.JWTBundle())
	for _, e := range s.matched() {
		for _, td := range e.FederatesWith {
			if b, ok := s.m.federatedJWT.Get(td); ok {
				set.Add(b)
			}
		}
	}
	return set
}

// Close ends the subscription.
func (s *Subscription) Close() { s.m.unsubscribe(s) }

func selectorList(sels []attestor.Selector) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.String()
	}
	return out
}

func idList(entries []Entry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.SPIFFEID.String()
	}
	return out
}
