package federation

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Metrics are the federation metrics, one series per trust domain fetched
// from an endpoint, there from the start. A nil *Metrics records nothing.
type Metrics struct {
	failures *prometheus.CounterVec
	ageDesc  *prometheus.Desc
	domains  []spiffeid.TrustDomain
	clock    func() time.Time

	mu      sync.Mutex
	fetched map[spiffeid.TrustDomain]time.Time
}

// NewMetrics registers the federation metrics with reg for domains.
func NewMetrics(reg prometheus.Registerer, domains []spiffeid.TrustDomain) *Metrics {
	m := &Metrics{
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshid_federation_refresh_failures_total",
			Help: "Failed fetches of a federated trust domain's bundle from its bundle endpoint.",
		}, []string{"trust_domain"}),
		ageDesc: prometheus.NewDesc("meshid_federation_bundle_age_seconds",
			"Seconds since a federated trust domain's bundle was last fetched from its endpoint; -1 before the first fetch.",
			[]string{"trust_domain"}, nil),
		domains: domains,
		clock:   time.Now,
		fetched: map[spiffeid.TrustDomain]time.Time{},
	}
	for _, td := range domains {
		m.failures.WithLabelValues(td.Name())
	}
	if reg != nil {
		reg.MustRegister(m.failures, m)
	}
	return m
}

func (m *Metrics) setAge(td spiffeid.TrustDomain, at time.Time) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.fetched[td] = at
	m.mu.Unlock()
}

func (m *Metrics) failed(td spiffeid.TrustDomain) {
	if m != nil {
		m.failures.WithLabelValues(td.Name()).Inc()
	}
}

// Describe and Collect make the bundle ages a collector computed at
// scrape time.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.ageDesc }

func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	now := m.clock()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, td := range m.domains {
		age := -1.0
		if at, ok := m.fetched[td]; ok {
			age = now.Sub(at).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(m.ageDesc, prometheus.GaugeValue, age, td.Name())
	}
}
