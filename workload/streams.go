package workload

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshid/meshid/internal/liveset"
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
func (s *Server) track(method string, sub Subscription) (*liveset.Record[Stream], func()) {
	open := s.metrics.streams.WithLabelValues(method)
	open.Inc()
	r, untrack := s.live.Add(Stream{Method: method, Subscription: sub, Started: s.clock()})
	return r, func() {
		untrack()
		open.Dec()
	}
}

// sent records a response; it is called before the response is sent, so
// whoever got it finds it in Streams.
func (s *Server) sent(r *liveset.Record[Stream], method string) {
	s.metrics.responses.WithLabelValues(method).Inc()
	at := s.clock()
	r.Update(func(st *Stream) {
		st.Responses++
		st.LastResponse = at
	})
}

// Streams returns the open streams, oldest first.
func (s *Server) Streams() []Stream {
	return liveset.Each(&s.live, func(st *Stream) Stream { return *st },
		func(a, b Stream) int { return a.Started.Compare(b.Started) })
}
