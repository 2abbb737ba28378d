package workload

import (
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The streaming methods, as metric label values and in Streams.
const (
	methodX509SVID    = "FetchX509SVID"
	methodX509Bundles = "FetchX509Bundles"
	methodJWTBundles  = "FetchJWTBundles"
)

// Stream describes one open Workload API stream, for operators (meshid
// status). It is a copy: it never changes after Streams returns it.
type Stream struct {
	Method string // FetchX509SVID, FetchX509Bundles or FetchJWTBundles
	// Subscription is the caller's view of its identities: the server's
	// owner, which made it, knows the caller from it.
	Subscription Subscription
	Started      time.Time
	Responses    int
	LastResponse time.Time // zero before the first
}

type tracked struct {
	mu sync.Mutex
	s  Stream
}

type metrics struct {
	streams   *prometheus.GaugeVec
	responses *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) metrics {
	m := metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshid_workload_streams",
			Help: "Open Workload API streams, by method (FetchX509SVID, FetchX509Bundles, FetchJWTBundles).",
		}, []string{"method"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_workload_responses_total",
			Help: "Responses sent on Workload API streams, by method: the first of each stream and every update after it.",
		}, []string{"method"}),
	}
	for _, method := range []string{methodX509SVID, methodX509Bundles, methodJWTBundles} {
		m.streams.WithLabelValues(method)
		m.responses.WithLabelValues(method)
	}
	if reg != nil {
		reg.MustRegister(m.streams, m.responses)
	}
	return m
}

// track records and counts a stream until the returned func is called.
func (s *Server) track(method string, sub Subscription) (*tracked, func()) {
	t := &tracked{s: Stream{Method: method, Subscription: sub, Started: s.clock()}}
	open := s.metrics.streams.WithLabelValues(method)
	open.Inc()
	s.mu.Lock()
	s.live[t] = struct{}{}
	s.mu.Unlock()
	return t, func() {
		s.mu.Lock()
		delete(s.live, t)
		s.mu.Unlock()
		open.Dec()
	}
}

// sent records a response; it is called before the response is sent, so
// whoever got it finds it in Streams.
func (s *Server) sent(t *tracked) {
	s.metrics.responses.WithLabelValues(t.s.Method).Inc()
	t.mu.Lock()
	t.s.Responses++
	t.s.LastResponse = s.clock()
	t.mu.Unlock()
}

// Streams returns the open streams, oldest first.
func (s *Server) Streams() []Stream {
	s.mu.Lock()
	live := slices.Collect(maps.Keys(s.live))
	s.mu.Unlock()
	out := make([]Stream, 0, len(live))
	for _, t := range live {
		t.mu.Lock()
		out = append(out, t.s)
		t.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b Stream) int { return a.Started.Compare(b.Started) })
	return out
}
