package ca

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrNoValidCA is returned by the mint methods, Health and Open when every
// generation has expired and no successor could be written. It is wrapped
// with the expiry and the rotation error, which says what to fix.
var ErrNoValidCA = errors.New("no valid CA generation")

// Health returns nil while the CA is on its timeline. Otherwise it says
// what is wrong: rotation failing since when, with what error, and until
// when the CA can still sign; or, wrapping ErrNoValidCA, that it can sign
// nothing at all. An upstream authority that fails is tolerated until the
// newest intermediate's successor is due to sign (5/6 of its life): until
// then it is logged and counted, not a reason to be unready.
func (a *Authority) Health() error {
	now := a.clock()
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.activeLocked(now) == nil {
		return a.noValidLocked()
	}
	if a.failure != nil && (a.up == nil || !a.up.tolerates(a.gens[len(a.gens)-1], now)) {
		return fmt.Errorf("CA rotation failing since %s; the CA signs until %s unless a successor is written: %w",
			a.failingSince.Format(time.RFC3339), a.signsUntilLocked().Format(time.RFC3339), a.failure)
	}
	return nil
}

// noValidLocked explains why no generation can sign.
func (a *Authority) noValidLocked() error {
	if len(a.gens) == 0 { // only in Open, when the first generation could not be written
		return fmt.Errorf("%w: the first generation could not be created: %w", ErrNoValidCA, a.failure)
	}
	newest := a.gens[len(a.gens)-1]
	expired := newest.cert().NotAfter.Format(time.RFC3339)
	if a.failure == nil {
		// Between the expiry and the next rotation, which writes the
		// successor.
		return fmt.Errorf("%w: generation %s expired at %s and its successor is not written yet", ErrNoValidCA, newest.name, expired)
	}
	return fmt.Errorf("%w: generation %s expired at %s; rotation failing since %s: %w",
		ErrNoValidCA, newest.name, expired, a.failingSince.Format(time.RFC3339), a.failure)
}

// metrics are the CA's series. They exist without a registry, so the code
// that updates them never asks whether anyone listens.
type metrics struct {
	expiry           prometheus.Gauge
	rotationFailures prometheus.Counter
	upstreamFailures prometheus.Counter
	issued           *prometheus.CounterVec
	issuedX509       prometheus.Counter
	issuedJWT        prometheus.Counter
}

func newMetrics() metrics {
	issued := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshid_svid_issued_total",
		Help: "SVIDs the CA signed, by kind (x509, jwt): workloads' and meshid's own, first issues and renewals alike.",
	}, []string{"kind"})
	return metrics{
		issued:     issued,
		issuedX509: issued.WithLabelValues("x509"),
		issuedJWT:  issued.WithLabelValues("jwt"),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "meshid_ca_expiry_seconds",
			Help: "Unix time at which the last CA generation expires: the node can sign nothing after it unless a successor is written.",
		}),
		rotationFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshid_ca_rotation_failures_total",
			Help: "CA rotations that failed, such as a successor generation that could not be written; retried every rotation interval.",
		}),
		upstreamFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshid_ca_upstream_failures_total",
			Help: "Calls to the upstream authority (ca.upstream.vault) that failed or gave an answer meshid refused: signing an intermediate or reading its roots; retried with backoff.",
		}),
	}
}

func (m metrics) register(reg prometheus.Registerer, remote bool) error {
	if reg == nil {
		return nil
	}
	cs := []prometheus.Collector{m.expiry, m.rotationFailures, m.issued}
	if remote {
		cs = append(cs, m.upstreamFailures)
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register CA metrics: %w", err)
		}
	}
	return nil
}
