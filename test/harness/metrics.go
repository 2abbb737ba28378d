package harness

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Metric reads one series from meshid's /metrics, named as Prometheus
// prints it: "meshid_entries" or
// `meshid_attestation_failures_total{reason="process_exited"}`. A series
// not exported yet (a counter with no labelled value so far) reads 0.
func (m *Meshid) Metric(ctx context.Context, series string) (float64, error) {
	return MetricAt(ctx, m.AdminAddr, series)
}

// MetricAt is Metric of the meshid whose admin.address is addr, one this
// harness did not start (in a container, say).
func MetricAt(ctx context.Context, addr, series string) (float64, error) {
	status, body, err := Get(ctx, "http://"+addr+"/metrics")
	if err != nil {
		return 0, fmt.Errorf("harness: meshid /metrics: %w", err)
	}
	if status != 200 {
		return 0, fmt.Errorf("harness: meshid /metrics: status %d: %s", status, snippet(body))
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		value, ok := strings.CutPrefix(line, series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, fmt.Errorf("harness: meshid /metrics: %q: %w", line, err)
		}
		return v, nil
	}
	return 0, nil
}
