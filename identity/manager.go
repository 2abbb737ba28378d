// Package identity decides who gets which SPIFFE identity: it holds the
// entries, matches attested callers against them, keeps the issued SVIDs
// fresh and tells every watcher when its identities change. It never speaks
// a wire protocol; sds and workload do, through the Subscription it returns.
package identity

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/ca"
)

// Minter issues X509-SVIDs and publishes the trust bundle; *ca.CA is one.
type Minter interface {
	MintX509SVID(ca.SVIDRequest) (*x509svid.SVID, error)
	X509Bundle() *x509bundle.Bundle
}

// Attestor turns the kernel's view of a caller into selectors.
type Attestor interface {
	Attest(context.Context, attestor.Caller) ([]attestor.Selector, error)
}

// Options configures a Manager.
type Options struct {
	Entries    []Entry
	DefaultTTL time.Duration
	Minter     Minter
	Attestor   Attestor
	Clock      func() time.Time
	Log        *slog.Logger
}

// Manager is the node's identity authority.
type Manager struct {
	entries    []Entry
	defaultTTL time.Duration
	minter     Minter
	attestor   Attestor
	clock      func() time.Time
	log        *slog.Logger

	mu    sync.Mutex
	svids map[svidKey]*issued
	subs  map[*Subscription]struct{}
}

// svidKey identifies what an SVID says, so callers of entries that ask for
// the same thing share one SVID (and one rotation).
type svidKey struct {
	id  string
	ttl time.Duration
	dns string
}

type issued struct {
	req     ca.SVIDRequest
	svid    *x509svid.SVID
	renewAt time.Time
}

// NewManager returns a Manager for a fixed set of entries.
func NewManager(o Options) *Manager {
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		entries:    o.Entries,
		defaultTTL: o.DefaultTTL,
		minter:     o.Minter,
		attestor:   o.Attestor,
		clock:      o.Clock,
		log:        o.Log,
		svids:      map[svidKey]*issued{},
		subs:       map[*Subscription]struct{}{},
	}
}

// Watch attests the gRPC caller in ctx (by the kernel's peer credentials,
// never by what it sent) and subscribes it to its identities. A caller no
// entry matches gets a subscription with no SVIDs; the protocol front door
// turns that into its own refusal. Close the subscription when done.
func (m *Manager) Watch(ctx context.Context) (*Subscription, error) {
	caller, err := attestor.CallerFromContext(ctx)
	if err != nil {
		return nil, err
	}
	sels, err := m.attestor.Attest(ctx, caller)
	if err != nil {
		return nil, fmt.Errorf("attest caller (pid %d, uid %d): %w", caller.PID, caller.UID, err)
	}
	var matched []Entry
	for _, e := range m.entries {
		if e.Matches(sels) {
			matched = append(matched, e)
		}
	}
	if len(matched) == 0 {
		m.log.Warn("no entry matches caller: it gets no identity",
			"pid", caller.PID, "uid", caller.UID, "gid", caller.GID, "selectors", selectorList(sels))
	} else {
		m.log.Info("caller attested", "pid", caller.PID, "uid", caller.UID,
			"selectors", selectorList(sels), "spiffe_ids", idList(matched))
	}

	sub := &Subscription{m: m, caller: caller, entries: matched, changed: make(chan struct{}, 1)}
	m.mu.Lock()
	m.subs[sub] = struct{}{}
	m.mu.Unlock()
	return sub, nil
}

// Run renews SVIDs at half their life and tells their subscribers, until
// ctx ends. Current renews on demand as well, so a late tick (a suspended
// machine) never lets an expired SVID out.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			m.renewDue()
		}
	}
}

func (m *Manager) renewDue() {
	now := m.clock()
	m.mu.Lock()
	defer m.mu.Unlock()
	renewed := map[svidKey]bool{}
	for k, is := range m.svids {
		if now.Before(is.renewAt) {
			continue
		}
		if _, err := m.mintLocked(k, is.req); err != nil {
			m.log.Error("renew SVID", "spiffe_id", k.id, "err", err)
			continue
		}
		renewed[k] = true
	}
	if len(renewed) == 0 {
		return
	}
	for sub := range m.subs {
		if slices.ContainsFunc(sub.entries, func(e Entry) bool { k, _ := m.request(e); return renewed[k] }) {
			sub.notify()
		}
	}
}

func (m *Manager) request(e Entry) (svidKey, ca.SVIDRequest) {
	ttl := e.X509TTL
	if ttl == 0 {
		ttl = m.defaultTTL
	}
	k := svidKey{id: e.SPIFFEID.String(), ttl: ttl, dns: strings.Join(e.DNSNames, ",")}
	return k, ca.SVIDRequest{ID: e.SPIFFEID, TTL: ttl, DNSNames: e.DNSNames}
}

// svidFor returns a fresh SVID for the entry, minting one when there is
// none yet or the cached one is due for renewal.
func (m *Manager) svidFor(e Entry) (*x509svid.SVID, error) {
	k, req := m.request(e)
	m.mu.Lock()
	defer m.mu.Unlock()
	if is, ok := m.svids[k]; ok && m.clock().Before(is.renewAt) {
		return is.svid, nil
	}
	return m.mintLocked(k, req)
}

func (m *Manager) mintLocked(k svidKey, req ca.SVIDRequest) (*x509svid.SVID, error) {
	svid, err := m.minter.MintX509SVID(req)
	if err != nil {
		return nil, err
	}
	leaf := svid.Certificates[0]
	// Renew at half the lifetime actually granted (the CA may have capped it).
	issuedAt := m.clock()
	m.svids[k] = &issued{req: req, svid: svid, renewAt: issuedAt.Add(leaf.NotAfter.Sub(issuedAt) / 2)}
	m.log.Info("issued X509-SVID", "spiffe_id", k.id, "serial", leaf.SerialNumber.Text(16), "expires", leaf.NotAfter)
	return svid, nil
}

func (m *Manager) unsubscribe(s *Subscription) {
	m.mu.Lock()
	delete(m.subs, s)
	m.mu.Unlock()
}

// Subscription is one caller's live view of its identities.
type Subscription struct {
	m       *Manager
	caller  attestor.Caller
	entries []Entry
	changed chan struct{}
}

// Changed receives a value whenever Current would return something new.
// Signals coalesce: a slow reader sees one signal and reads the latest
// state, so it never holds up the others.
func (s *Subscription) Changed() <-chan struct{} { return s.changed }

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
	for _, e := range s.entries {
		svid, err := s.m.svidFor(e)
		if err != nil {
			return nil, fmt.Errorf("issue %s: %w", e.SPIFFEID, err)
		}
		x.SVIDs = append(x.SVIDs, svid)
	}
	return x, nil
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
