package identity

import (
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/ca"
)

// The SVID cache. Minting (a key pair and a signature, or a call to a slow
// upstream) runs without m.mu: m.mu only guards reading and writing the
// cache, so one slow mint holds up the callers of its own key and no one
// else. Each key has at most one mint under way, its flight; whoever asks
// for that key meanwhile waits for it instead of minting a second SVID.
//
// One renewal rule for every X509-SVID, a workload's or meshid's own: it
// is renewed at half its life (jittered), by Run or on demand when Run is
// late; a renewal that fails leaves it in service while it is still valid;
// an expired SVID is never returned.

// svidKey identifies what an SVID says, so callers of entries that ask for
// the same thing share one SVID (and one rotation).
type svidKey struct {
	id  string
	ttl time.Duration
	dns string
	// self marks meshid's own SVIDs (Self): they are kept whatever the
	// entries say, and their keys never leave meshid, not even to a
	// workload whose entry names the same SPIFFE ID.
	self bool
}

type issued struct {
	req     ca.SVIDRequest
	svid    *x509svid.SVID
	renewAt time.Time
}

// flight is one mint under way; done is closed when val and err are set.
type flight[T any] struct {
	done chan struct{}
	val  T
	err  error
}

func newFlight[T any]() *flight[T] { return &flight[T]{done: make(chan struct{})} }

func (f *flight[T]) wait() (T, error) {
	<-f.done
	return f.val, f.err
}

func (f *flight[T]) land(val T, err error) (T, error) {
	f.val, f.err = val, err
	close(f.done)
	return val, err
}

func (m *Manager) request(e Entry) (svidKey, ca.SVIDRequest) {
	ttl := e.X509TTL
	if ttl == 0 {
		ttl = m.defaultTTL
	}
	k := svidKey{id: e.SPIFFEID.String(), ttl: ttl, dns: strings.Join(e.DNSNames, ",")}
	return k, ca.SVIDRequest{ID: e.SPIFFEID, TTL: ttl, DNSNames: e.DNSNames}
}

// svidFor returns a fresh SVID for the entry.
func (m *Manager) svidFor(e Entry) (*x509svid.SVID, error) {
	return m.svid(m.request(e))
}

// svid returns the SVID for k: the cached one until its renewal time, else
// a new one, minted by this call or by the one already under way for k.
func (m *Manager) svid(k svidKey, req ca.SVIDRequest) (*x509svid.SVID, error) {
	m.mu.Lock()
	if is, ok := m.svids[k]; ok && m.clock().Before(is.renewAt) {
		m.mu.Unlock()
		return is.svid, nil
	}
	f, underWay := m.minting[k]
	if !underWay {
		f = newFlight[*x509svid.SVID]()
		m.minting[k] = f
	}
	m.mu.Unlock()
	if underWay {
		return f.wait()
	}
	return f.land(m.mint(k, req, f))
}

// mint issues the SVID of flight f for k and caches it, unless SetEntries
// took f off m.minting meanwhile: then no entry wants k any more, and the
// SVID goes to those who asked but is never renewed.
func (m *Manager) mint(k svidKey, req ca.SVIDRequest, f *flight[*x509svid.SVID]) (*x509svid.SVID, error) {
	svid, err := m.minter.MintX509SVID(req)
	now := m.clock()
	m.mu.Lock()
	defer m.mu.Unlock()
	wanted := m.minting[k] == f
	if wanted {
		delete(m.minting, k)
	}
	prev := m.svids[k]
	if err != nil {
		if prev != nil && now.Before(prev.svid.Certificates[0].NotAfter) {
			m.log.Error("renew X509-SVID: serving the current one until it expires", "spiffe_id", k.id,
				"expires", prev.svid.Certificates[0].NotAfter, "err", err)
			return prev.svid, nil
		}
		return nil, err
	}
	leaf := svid.Certificates[0]
	m.log.Info("issued X509-SVID", "spiffe_id", k.id, "serial", leaf.SerialNumber.Text(16), "expires", leaf.NotAfter)
	if !wanted {
		return svid, nil
	}
	m.svids[k] = &issued{req: req, svid: svid, renewAt: m.renewalTime(now, leaf.NotAfter)}
	if prev != nil {
		// Whoever renewed it (Run, or a caller because Run was late), every
		// holder of the old one must hear of the new one before it expires.
		m.notifyHoldersLocked(k)
	}
	return svid, nil
}

func (m *Manager) notifyHoldersLocked(k svidKey) {
	for sub := range m.subs {
		if slices.ContainsFunc(sub.entries, func(e Entry) bool { ek, _ := m.request(e); return ek == k }) {
			sub.notify()
		}
	}
}

// renewDue renews every SVID past its renewal time, one after the other,
// and drops expired JWT-SVIDs. It holds m.mu only to find them.
func (m *Manager) renewDue() {
	type due struct {
		k   svidKey
		req ca.SVIDRequest
	}
	now := m.clock()
	var renew []due
	m.mu.Lock()
	for k, svid := range m.jwts {
		if !now.Before(svid.Expiry) {
			m.dropJWTLocked(k)
		}
	}
	for k, is := range m.svids {
		if !now.Before(is.renewAt) {
			renew = append(renew, due{k, is.req})
		}
	}
	m.mu.Unlock()
	for _, d := range renew {
		if _, err := m.svid(d.k, d.req); err != nil {
			m.log.Error("renew SVID", "spiffe_id", d.k.id, "err", err)
		}
	}
}

// renewalTime is half of the lifetime actually granted (the CA may have
// capped it), moved by up to ±10% of that half.
func (m *Manager) renewalTime(issuedAt, notAfter time.Time) time.Time {
	half := notAfter.Sub(issuedAt) / 2
	return issuedAt.Add(half + time.Duration(m.jitter()*0.1*float64(half)))
}

// jwtKey identifies a cached JWT-SVID: the same identity for the same set
// of audiences, in any order.
type jwtKey struct {
	id       string
	ttl      time.Duration
	audience string
}

// jwtFor returns a JWT-SVID for the entry and audience from the cache, or
// mints one when there is none or the cached one is past half its life;
// like X509-SVIDs, one mint per key at a time and none under m.mu.
func (m *Manager) jwtFor(e Entry, audience []string) (*ca.JWTSVID, error) {
	ttl := e.JWTTTL
	if ttl == 0 {
		ttl = m.defaultJWTTTL
	}
	aud := slices.Compact(slices.Sorted(slices.Values(audience)))
	k := jwtKey{id: e.SPIFFEID.String(), ttl: ttl, audience: strings.Join(aud, "\x00")}
	now := m.clock()
	m.mu.Lock()
	if svid, ok := m.jwts[k]; ok && now.Before(svid.IssuedAt.Add(svid.Expiry.Sub(svid.IssuedAt)/2)) {
		m.mu.Unlock()
		return svid, nil
	}
	f, underWay := m.mintingJWT[k]
	if !underWay {
		f = newFlight[*ca.JWTSVID]()
		m.mintingJWT[k] = f
	}
	m.mu.Unlock()
	if underWay {
		return f.wait()
	}
	svid, err := m.minter.MintJWTSVID(ca.JWTRequest{ID: e.SPIFFEID, Audience: aud, TTL: ttl})
	m.mu.Lock()
	if m.mintingJWT[k] == f { // else SetEntries dropped its identity meanwhile
		delete(m.mintingJWT, k)
		if err == nil {
			m.cacheJWTLocked(k, svid)
		}
	}
	m.mu.Unlock()
	return f.land(svid, err)
}

// cacheJWTLocked caches svid for k in place of the one there, the old one
// being past half its life, unless that takes the cache past either of its
// bounds: then k has none cached.
func (m *Manager) cacheJWTLocked(k jwtKey, svid *ca.JWTSVID) {
	m.dropJWTLocked(k)
	cost := jwtCost(k, svid)
	if len(m.jwts) >= maxCachedJWTs || m.jwtBytes+cost > maxCachedJWTBytes {
		return
	}
	m.jwts[k] = svid
	m.jwtBytes += cost
}

func (m *Manager) dropJWTLocked(k jwtKey) {
	if svid, ok := m.jwts[k]; ok {
		m.jwtBytes -= jwtCost(k, svid)
		delete(m.jwts, k)
	}
}

// jwtEntryOverhead is what a cached JWT-SVID costs besides its strings:
// the map entry, the key, the JWTSVID and its slice headers.
const jwtEntryOverhead = 256

// jwtCost is what a cached JWT-SVID holds in memory: the strings of its key
// and of the token with its claims (its audiences are another copy),
// which the caller's audiences make as large as it likes.
func jwtCost(k jwtKey, svid *ca.JWTSVID) int {
	n := jwtEntryOverhead + len(k.id) + len(k.audience) + len(svid.Token)
	for _, a := range svid.Audience {
		n += len(a)
	}
	return n
}
