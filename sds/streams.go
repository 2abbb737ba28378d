package sds

import (
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/internal/echo"
)

// Stream describes one open SDS stream as the server last saw it, for
// operators (meshid status). It is a copy: it never changes after
// Streams returns it.
type Stream struct {
	API string // "sotw" or "delta"
	// Subscription is the caller's view of its identities: the server's
	// owner, which made it, knows the caller from it.
	Subscription Subscription
	// NodeID is what Envoy says its node is called. It is not trusted for
	// anything; it only helps to tell sidecars apart.
	NodeID    string
	Started   time.Time
	Resources []Resource // what was last sent of each name; Envoy may have rejected it (LastNACK)
	// Version is that of the last response: its version_info (sotw) or
	// system_version_info (delta); empty before the first.
	Version      string
	Responses    int
	LastResponse time.Time // zero before the first
	LastACK      time.Time // zero before the first
	LastNACK     *NACK     // nil unless Envoy rejected a response
}

// Resource is one secret sent on a stream.
type Resource struct {
	Name    string
	Version string
	// Serial and Expires describe the SVID of a tls_certificate secret
	// (serial in lower-case hex, as Envoy's /certs prints it); empty for
	// validation contexts.
	Serial  string
	Expires time.Time
}

// NACK is Envoy's last rejection on a stream.
type NACK struct {
	At      time.Time
	Version string // of the response Envoy rejected
	Message string // Envoy's error_detail, cut to a bounded length
}

// tracked is one live stream's record; its loop writes it, Streams reads
// it, each under mu.
type tracked struct {
	mu        sync.Mutex
	s         Stream
	resources map[string]Resource
}

// track records a stream until the returned func is called.
func (s *Server) track(api string, sub Subscription) (*tracked, func()) {
	t := &tracked{s: Stream{API: api, Subscription: sub, Started: s.clock()}, resources: map[string]Resource{}}
	s.mu.Lock()
	s.live[t] = struct{}{}
	s.mu.Unlock()
	return t, func() {
		s.mu.Lock()
		delete(s.live, t)
		s.mu.Unlock()
	}
}

// Streams returns the open streams, oldest first.
func (s *Server) Streams() []Stream {
	s.mu.Lock()
	live := slices.Collect(maps.Keys(s.live))
	s.mu.Unlock()
	out := make([]Stream, 0, len(live))
	for _, t := range live {
		out = append(out, t.snapshot())
	}
	slices.SortFunc(out, func(a, b Stream) int { return a.Started.Compare(b.Started) })
	return out
}

func (t *tracked) snapshot() Stream {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.s
	c.Resources = slices.SortedFunc(maps.Values(t.resources), func(a, b Resource) int { return strings.Compare(a.Name, b.Name) })
	if t.s.LastNACK != nil {
		n := *t.s.LastNACK
		c.LastNACK = &n
	}
	return c
}

func (t *tracked) node(id string) {
	if id == "" {
		return
	}
	t.mu.Lock()
	t.s.NodeID = echo.Clip(id, maxEcho)
	t.mu.Unlock()
}

func (t *tracked) acked(at time.Time) {
	t.mu.Lock()
	t.s.LastACK = at
	t.mu.Unlock()
}

func (t *tracked) nacked(at time.Time, version, message string) {
	t.mu.Lock()
	t.s.LastNACK = &NACK{At: at, Version: version, Message: echo.Clip(message, maxEchoDetail)}
	t.mu.Unlock()
}

// sent records a response: replace says whether it holds every resource
// (state of the world) or only those that changed (delta); removed are
// the names a delta response took away.
func (t *tracked) sent(at time.Time, version string, v view, replace bool, versions map[string]string, removed []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if replace {
		clear(t.resources)
	}
	for name, ver := range versions {
		r := Resource{Name: name, Version: ver}
		if svid := v.svidOf(name); svid != nil {
			leaf := svid.Certificates[0]
			r.Serial, r.Expires = leaf.SerialNumber.Text(16), leaf.NotAfter
		}
		t.resources[name] = r
	}
	for _, name := range removed {
		delete(t.resources, name)
	}
	t.s.Version = version
	t.s.Responses++
	t.s.LastResponse = at
}

// svidOf returns the SVID a resource name's tls_certificate carries, nil
// for a name that is a bundle or nothing.
func (v view) svidOf(name string) *x509svid.SVID {
	if len(v.x.SVIDs) == 0 {
		return nil
	}
	if name == nameDefault {
		return v.x.SVIDs[0]
	}
	for _, svid := range v.x.SVIDs {
		if svid.ID.String() == name {
			return svid
		}
	}
	return nil
}
