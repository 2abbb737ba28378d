package sds

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/internal/echo"
	"github.com/meshid/meshid/internal/liveset"
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

// tracked is one live stream's record: what Streams reports, and the
// resources by name, which a delta stream updates one by one.
type tracked struct {
	s         Stream
	resources map[string]Resource
}

type record = liveset.Record[tracked]

// track records a stream until the returned func is called.
func (s *Server) track(api string, sub Subscription) (*record, func()) {
	return s.live.Add(tracked{s: Stream{API: api, Subscription: sub, Started: s.clock()}, resources: map[string]Resource{}})
}

// Streams returns the open streams, oldest first.
func (s *Server) Streams() []Stream {
	return liveset.Each(&s.live, func(t *tracked) Stream {
		c := t.s
		c.Resources = slices.SortedFunc(maps.Values(t.resources), func(a, b Resource) int { return strings.Compare(a.Name, b.Name) })
		if t.s.LastNACK != nil {
			n := *t.s.LastNACK
			c.LastNACK = &n
		}
		return c
	}, func(a, b Stream) int { return a.Started.Compare(b.Started) })
}

func nodeSeen(r *record, id string) {
	if id != "" {
		r.Update(func(t *tracked) { t.s.NodeID = echo.Clip(id, maxEcho) })
	}
}

func acked(r *record, at time.Time) { r.Update(func(t *tracked) { t.s.LastACK = at }) }

func nacked(r *record, at time.Time, version, message string) {
	r.Update(func(t *tracked) {
		t.s.LastNACK = &NACK{At: at, Version: version, Message: echo.Clip(message, maxEchoDetail)}
	})
}

// recordSent records a response: replace says whether it holds every resource
// (state of the world) or only those that changed (delta); removed are
// the names a delta response took away.
func recordSent(r *record, at time.Time, version string, v view, replace bool, versions map[string]string, removed []string) {
	r.Update(func(t *tracked) {
		if replace {
			clear(t.resources)
		}
		for name, ver := range versions {
			res := Resource{Name: name, Version: ver}
			if svid := v.svidOf(name); svid != nil {
				leaf := svid.Certificates[0]
				res.Serial, res.Expires = leaf.SerialNumber.Text(16), leaf.NotAfter
			}
			t.resources[name] = res
		}
		for _, name := range removed {
			delete(t.resources, name)
		}
		t.s.Version = version
		t.s.Responses++
		t.s.LastResponse = at
	})
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
