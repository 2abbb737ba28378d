package bundles

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshid/meshid/internal/config"
)

// metrics are the bundle series of docs/authz.md § Metrics.
type metrics struct {
	lastSuccess, lastActivation *prometheus.GaugeVec
	failures                    *prometheus.CounterVec
	bytes                       *prometheus.CounterVec
	revision                    *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer, bundles []config.Bundle) (*metrics, error) {
	m := &metrics{
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshid_authz_bundle_last_success_timestamp_seconds",
			Help: "When the bundle service last answered with a bundle that was activated, or with 304 Not Modified (Unix seconds).",
		}, []string{"name"}),
		lastActivation: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshid_authz_bundle_last_activation_timestamp_seconds",
			Help: "When the bundle's active copy was activated, read from disk or downloaded (Unix seconds).",
		}, []string{"name"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_authz_bundle_failures_total",
			Help: "Bundles not activated (or not kept), by reason: download, verify, compile, persist. The last good bundle stays.",
		}, []string{"name", "reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_authz_bundle_downloaded_bytes_total",
			Help: "Bytes of bundle bodies downloaded that read as bundles (those of a body refused as no bundle are not known); a 304 adds none.",
		}, []string{"name"}),
		revision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "meshid_authz_bundle_active_revision_info",
			Help: "1 for the manifest revision of each bundle's active copy.",
		}, []string{"name", "revision"}),
	}
	// Every series exists from the start, so that a rate or an alert
	// sees 0 before the first event.
	for _, b := range bundles {
		m.lastSuccess.WithLabelValues(b.Name)
		m.lastActivation.WithLabelValues(b.Name)
		m.bytes.WithLabelValues(b.Name)
		for _, r := range []string{ReasonDownload, ReasonVerify, ReasonCompile, ReasonPersist} {
			m.failures.WithLabelValues(b.Name, r)
		}
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.lastSuccess, m.lastActivation, m.failures, m.bytes, m.revision} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register bundle metrics: %w", err)
		}
	}
	return m, nil
}
