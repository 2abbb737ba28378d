package attestor

import (
	"context"
	"os"
	"testing"
	"time"
)

// BenchmarkAttest measures attesting this process against the floor of
// reading the two procfs files every attestation needs anyway, and
// reports each as a multiple of that floor (x-floor).
func BenchmarkAttest(b *testing.B) {
	c := Caller{PID: int32(os.Getpid()), UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
	p, err := openProcess(defaultProcDir, c, -1)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	c.proc = p
	var floor float64 // ns per floor operation
	b.Run("floor: read stat and status", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			if _, err := p.startTime(); err != nil {
				b.Fatal(err)
			}
			if _, err := p.status(); err != nil {
				b.Fatal(err)
			}
		}
		floor = float64(time.Since(start).Nanoseconds()) / float64(b.N)
	})
	for _, tt := range []struct {
		name string
		sha  bool
	}{{"unix", false}, {"unix with sha256 (cached)", true}} {
		a, err := New(Options{SHA256: tt.sha})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tt.name, func(b *testing.B) {
			start := time.Now()
			for b.Loop() {
				if _, err := a.Attest(context.Background(), c); err != nil {
					b.Fatal(err)
				}
			}
			if floor > 0 {
				b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N)/floor, "x-floor")
			}
		})
	}
}
