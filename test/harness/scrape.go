package harness

import (
	"bytes"
	"context"
	"fmt"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape is one read of meshid's /metrics, by family name.
type Scrape map[string]*dto.MetricFamily

// Scrape reads and parses meshid's /metrics whole, for tests that look at
// many series or their labels (Metric reads one series by its printed
// name).
func (m *Meshid) Scrape(ctx context.Context) (Scrape, error) {
	status, body, err := Get(ctx, "http://"+m.AdminAddr+"/metrics")
	if err != nil {
		return nil, fmt.Errorf("harness: meshid /metrics: %w", err)
	}
	if status != 200 {
		return nil, fmt.Errorf("harness: meshid /metrics: status %d: %s", status, snippet(body))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("harness: meshid /metrics: %w", err)
	}
	return families, nil
}

// Value sums the samples of family name whose labels include every pair
// of labels (name, value, name, value, ...): a counter's or gauge's value,
// a histogram's sample count. ok is false when no sample matches.
func (s Scrape) Value(name string, labels ...string) (v float64, ok bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		ok = true
		switch {
		case m.GetCounter() != nil:
			v += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			v += m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		case m.GetUntyped() != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v, ok
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}
