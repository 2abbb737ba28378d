package authz

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshid/meshid/authz/decisionlog"
)

// serverMetrics are the authz series listed in docs/authz.md § Metrics.
type serverMetrics struct {
	allowed, denied, failed                         prometheus.Counter
	allowedDuration, deniedDuration, failedDuration prometheus.Observer
	reloadErrors                                    prometheus.Counter
	cacheHits, cacheMisses                          prometheus.Counter
	panics                                          prometheus.Counter
}

func newServerMetrics(reg prometheus.Registerer, decisions *decisionlog.Log, cacheLen func() int) (*serverMetrics, error) {
	decisionsTotal := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshid_authz_decisions_total",
		Help: "ext_authz decisions by result: allow, deny (by policy) or error (no decision reached, denied). Dry run counts what the policy decided.",
	}, []string{"result"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "meshid_authz_duration_seconds",
		Help:    "Time to answer one ext_authz check (input, policy evaluation and response), by result: allow, deny or error, as meshid_authz_decisions_total counts them.",
		Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1},
	}, []string{"result"})
	m := &serverMetrics{
		allowed:         decisionsTotal.WithLabelValues("allow"),
		denied:          decisionsTotal.WithLabelValues("deny"),
		failed:          decisionsTotal.WithLabelValues("error"),
		allowedDuration: duration.WithLabelValues("allow"),
		deniedDuration:  duration.WithLabelValues("deny"),
		failedDuration:  duration.WithLabelValues("error"),
		reloadErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshid_authz_policy_reload_errors_total",
			Help: "Policy reloads that failed (parse, compile or read errors); the last good policies stay in use.",
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshid_authz_cache_hits_total",
			Help: "Decisions answered from the decision cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshid_authz_cache_misses_total",
			Help: "Decisions evaluated because the decision cache had none for the request (not counted when the cache is off).",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshid_authz_panics_total",
			Help: "Decisions that panicked (a bug in meshid or OPA), each denied and logged with its stack; also counted as result=error decisions.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	collectors := []prometheus.Collector{decisionsTotal, duration, m.reloadErrors, m.cacheHits, m.cacheMisses, m.panics,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "meshid_authz_cache_entries",
			Help: "Decisions in the decision cache now; it starts empty with every policy reload.",
		}, func() float64 { return float64(cacheLen()) }),
	}
	if decisions != nil {
		collectors = append(collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "meshid_authz_decision_logs_dropped_total",
			Help: "Decision log entries dropped because the log's queue was full.",
		}, func() float64 { return float64(decisions.Dropped()) }))
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register authz metrics: %w", err)
		}
	}
	return m, nil
}

func (m *serverMetrics) observe(r *Result) {
	d := r.Duration.Seconds()
	switch {
	case r.Err != nil:
		m.failed.Inc()
		m.failedDuration.Observe(d)
	case r.Allowed:
		m.allowed.Inc()
		m.allowedDuration.Observe(d)
	default:
		m.denied.Inc()
		m.deniedDuration.Observe(d)
	}
}
