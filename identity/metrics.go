package identity

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshid/meshid/attestor"
)

// metrics are the manager's Prometheus series. They exist even without a
// registry, so the code that counts never asks whether anyone listens.
type metrics struct {
	attestFailures *prometheus.CounterVec
	unmatched      prometheus.Counter
	reloadErrors   prometheus.Counter
	reloads        prometheus.Counter
	entries        prometheus.Gauge
}

// newMetrics registers the manager's series on reg; earliestExpiry is read
// at each scrape for meshid_svid_expiry_seconds.
func newMetrics(reg prometheus.Registerer, earliestExpiry func() float64) metrics {
	m := metrics{
		attestFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_attestation_failures_total",
			Help: "Callers that could not be attested, by reason (process_exited, pid_reused, credentials_changed, procfs, docker, kubelet, other).",
		}, []string{"reason"}),
		unmatched: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshid_unmatched_callers_total",
			Help: "Callers attested whose selectors no entry matches: they get no identity.",
		}),
		reloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshid_entries_reload_errors_total",
			Help: "Entries files rejected on reload; the last good entries stayed in force.",
		}),
		reloads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshid_entries_reloads_total",
			Help: "Entries files put in force by a reload.",
		}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshid_entries",
			Help: "Entries in force.",
		}),
	}
	// Every reason exists from the start, at 0, so that an alert on its
	// rate works before the first failure.
	for _, r := range attestor.Reasons() {
		m.attestFailures.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.attestFailures, m.unmatched, m.reloadErrors, m.reloads, m.entries,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "meshid_svid_expiry_seconds",
				Help: "Unix time at which the first of the X509-SVIDs meshid holds for its callers and itself expires; +Inf while it holds none. Renewal keeps it about half an SVID lifetime ahead: nearer means renewal stalls.",
			}, earliestExpiry))
	}
	return m
}
