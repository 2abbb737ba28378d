package helper

import (
	"testing"
	"time"
)

func TestPastRenewal(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(40 * time.Second) // 3/4 is at +30s
	tests := []struct {
		at   time.Duration
		want bool
	}{
		{0, false},
		{20 * time.Second, false}, // meshid renews about here
		{29*time.Second + 999*time.Millisecond, false},
		{30 * time.Second, true},
		{39 * time.Second, true},
		{time.Hour, true},
	}
	for _, tt := range tests {
		if got := PastRenewal(nb, na, nb.Add(tt.at)); got != tt.want {
			t.Errorf("at +%v: PastRenewal = %v, want %v", tt.at, got, tt.want)
		}
	}
}
