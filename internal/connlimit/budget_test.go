package connlimit

import (
	"strings"
	"syscall"
	"testing"
)

func TestBudget(t *testing.T) {
	for _, tt := range []struct {
		name       string
		nofile     uint64
		configured Limits
		want       Limits
		wantErr    string
	}{
		// reserve min(1024, 1024/4) = 256; (1024-256)/2 = 384; 384/8 = 48
		{name: "a 1024 limit", nofile: 1024, want: Limits{Total: 384, PerUID: 48}},
		// reserve 1024; (4096-1024)/2 = 1536; 1536/8 = 192
		{name: "a 4096 limit", nofile: 4096, want: Limits{Total: 1536, PerUID: 192}},
		// (20000-1024)/2 = 9488, capped at 8192
		{name: "a 20000 limit", nofile: 20000, want: Limits{Total: 8192, PerUID: 1024}},
		{name: "systemd's 524288", nofile: 524288, want: Limits{Total: 8192, PerUID: 1024}},
		{name: "tiny limit", nofile: 8, want: Limits{Total: 3, PerUID: 1}},
		{name: "configured both", nofile: 20000, configured: Limits{Total: 100, PerUID: 10}, want: Limits{Total: 100, PerUID: 10}},
		{name: "configured per uid only", nofile: 1024, configured: Limits{PerUID: 50}, want: Limits{Total: 384, PerUID: 50}},
		{name: "configured total only", nofile: 20000, configured: Limits{Total: 800}, want: Limits{Total: 800, PerUID: 100}},
		{name: "configured total that just fits", nofile: 20000, configured: Limits{Total: 9488}, want: Limits{Total: 9488, PerUID: 1186}},
		{name: "configured total above the fds", nofile: 20000, configured: Limits{Total: 9489},
			wantErr: "9489 connections need 20002 file descriptors (2 each, and 1024 kept for meshid's own work) but RLIMIT_NOFILE is 20000: raise it (LimitNOFILE= in systemd, ulimit -Hn) or allow at most 9488 connections"},
		{name: "per uid above the derived total", nofile: 1024, configured: Limits{PerUID: 385},
			wantErr: "385 connections per uid is more than the 384 in all"},
		{name: "no room at all", nofile: 1, wantErr: "a file descriptor limit of 1 leaves no room for a single connection"},
		{name: "negative", nofile: 1024, configured: Limits{Total: -1}, wantErr: "must not be negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Budget(tt.nofile, tt.configured)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Budget = %+v, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Budget = %+v, want %+v", got, tt.want)
			}
			if fds := uint64(got.Total)*FDsPerConn + reserve(tt.nofile); fds > tt.nofile {
				t.Errorf("%d connections and the reserve need %d descriptors, more than the %d there are", got.Total, fds, tt.nofile)
			}
		})
	}
}

// TestRaiseFDLimit: a soft limit below the hard one is raised to it.
func TestRaiseFDLimit(t *testing.T) {
	var orig syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &orig) })
	if orig.Max < 512 {
		t.Skipf("hard limit %d too low to lower the soft one safely", orig.Max)
	}
	lowered := syscall.Rlimit{Cur: 256, Max: orig.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		t.Fatal(err)
	}
	got, err := RaiseFDLimit()
	if err != nil {
		t.Fatal(err)
	}
	var now syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &now); err != nil {
		t.Fatal(err)
	}
	if got != orig.Max || now.Cur != orig.Max {
		t.Errorf("RaiseFDLimit = %d and the soft limit is %d, want both the hard limit %d", got, now.Cur, orig.Max)
	}
	if again, err := RaiseFDLimit(); err != nil || again != orig.Max {
		t.Errorf("RaiseFDLimit at the hard limit = %d, %v; want %d", again, err, orig.Max)
	}
}

func TestTCPCap(t *testing.T) {
	for _, tc := range []struct {
		nofile     uint64
		configured int
		want       int
	}{
		{1024, 0, 64},     // reserve 256
		{4096, 0, 256},    // reserve 1024
		{1 << 20, 0, 256}, // the reserve stops growing
		{16, 0, 1},        // never none
		{1024, 500, 500},  // configured wins
	} {
		if got := TCPCap(tc.nofile, tc.configured); got != tc.want {
			t.Errorf("TCPCap(%d, %d) = %d, want %d", tc.nofile, tc.configured, got, tc.want)
		}
	}
}
