package sds

import "github.com/prometheus/client_golang/prometheus"

// The two protocols, as metric label values and in logs.
const (
	apiSotW  = "sotw"
	apiDelta = "delta"
	apiFetch = "fetch" // FetchSecrets, in the refusals metric only
)

type metrics struct {
	streams   *prometheus.GaugeVec
	responses *prometheus.CounterVec
	nacks     *prometheus.CounterVec
	refused   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		streams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshid_sds_streams",
			Help: "Open SDS streams, by protocol.",
		}, []string{"api"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_sds_responses_total",
			Help: "SDS responses sent, by protocol.",
		}, []string{"api"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_sds_nacks_total",
			Help: "SDS responses Envoy rejected (NACK), by protocol.",
		}, []string{"api"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_sds_refused_resources_total",
			Help: "SDS resource names refused because the caller is not entitled to them, by protocol.",
		}, []string{"api"}),
	}
	// Both protocols exist from the start, at 0, so that an alert on NACKs
	// works before the first one.
	for _, api := range []string{apiSotW, apiDelta} {
		m.streams.WithLabelValues(api)
		m.responses.WithLabelValues(api)
		m.nacks.WithLabelValues(api)
		m.refused.WithLabelValues(api)
	}
	m.refused.WithLabelValues(apiFetch)
	if reg != nil {
		reg.MustRegister(m.streams, m.responses, m.nacks, m.refused)
	}
	return m
}

// open counts a stream until the returned func is called.
func (m *metrics) open(api string) (closed func()) {
	g := m.streams.WithLabelValues(api)
	g.Inc()
	return g.Dec
}
