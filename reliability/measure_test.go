//go:build reliability

package reliability

import (
	"fmt"
	"slices"
	"time"
)

// latencies are the durations of one kind of operation in one run.
type latencies []time.Duration

// quantile returns the q-quantile (0 < q <= 1) by the nearest-rank method.
func (l latencies) quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func (l latencies) p50() time.Duration { return l.quantile(0.50) }
func (l latencies) p99() time.Duration { return l.quantile(0.99) }
func (l latencies) max() time.Duration { return l.quantile(1) }

// String is "n=N p50=… p99=… max=…", durations rounded for reading.
func (l latencies) String() string {
	return fmt.Sprintf("n=%d p50=%v p99=%v max=%v", len(l), round(l.p50()), round(l.p99()), round(l.max()))
}

// round keeps three significant digits or so: 1.23ms, 45.6µs, 2.1s.
func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= 10*time.Millisecond:
		return d.Round(100 * time.Microsecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d >= 100*time.Microsecond:
		return d.Round(time.Microsecond)
	default:
		return d.Round(100 * time.Nanosecond)
	}
}

// ratio is a/b, for figures reported against a baseline.
func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}
