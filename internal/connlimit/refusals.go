package connlimit

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshid/meshid/internal/logpace"
)

type metrics struct {
	held    prometheus.Gauge
	refused *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, l Limits) (metrics, error) {
	m := metrics{
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshid_socket_connections",
			Help: "Connections held on the workload socket.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_socket_connections_refused_total",
			Help: "Connections to the workload socket closed as soon as accepted, by reason: per_uid (the caller's uid held its share), total (the socket was full), peercred (the kernel could not say who called).",
		}, []string{"reason"}),
	}
	for _, r := range reasons {
		m.refused.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	limit := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meshid_socket_connections_limit",
		Help: "The caps on connections to the workload socket: in all (scope total) and per uid (scope per_uid).",
	}, []string{"scope"})
	limit.WithLabelValues(reasonTotal).Set(float64(l.Total))
	limit.WithLabelValues(reasonPerUID).Set(float64(l.PerUID))
	for _, c := range []prometheus.Collector{m.held, m.refused, limit} {
		if err := reg.Register(c); err != nil {
			return metrics{}, err
		}
	}
	return m, nil
}

// logEvery paces the refusal log: a flood is one line per interval, saying
// how many refusals went unlogged since the last; the counter has them all.
// One pace covers every refusal, whatever its reason or uid.
const logEvery = 10 * time.Second

type refusalLog struct {
	log  *slog.Logger
	pace *logpace.Pacer[struct{}]
}

func newRefusalLog(log *slog.Logger, clock func() time.Time) *refusalLog {
	return &refusalLog{log: log, pace: logpace.New[struct{}](logEvery, 1, clock)}
}

func (r *refusalLog) refused(f refusal) {
	ok, unlogged := r.pace.Allow(struct{}{})
	if !ok {
		return
	}
	if f.reason == reasonPeerCred {
		r.log.Warn("workload socket: connection refused: no peer credentials", "reason", f.reason, "error", f.err, "unlogged_refusals", unlogged)
		return
	}
	msg := "workload socket: connection refused: this uid holds its share of connections (limits.connections_per_uid)"
	if f.reason == reasonTotal {
		msg = "workload socket: connection refused: the socket holds all the connections it may (limits.connections)"
	}
	r.log.Warn(msg, "reason", f.reason, "uid", f.uid, "pid", f.pid, "held", f.held, "limit", f.most, "unlogged_refusals", unlogged)
}
