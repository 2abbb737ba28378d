//go:build reliability

package reliability

import (
	"context"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/test/harness"
)

// TestCARotationFails starts meshid on a data_dir whose CA generation is
// due for its successor at once (made by the ca package as if long ago,
// harness.SeedCA) but where the successor cannot be written: the CA
// directory immutable (chattr +i, which stops root too), or data_dir a
// small tmpfs of its own that is full. meshid must not panic nor stop:
// it keeps signing with the generation still valid, says why on /readyz
// (503), counts every failed attempt in meshid_ca_rotation_failures_total
// and logs the failure once; when the generation it has expires it signs
// nothing, says so, and keeps running. Once the directory can be written
// again it writes the successor by itself, signs with it and is ready.
func TestCARotationFails(t *testing.T) {
	for _, c := range []struct {
		name string
		// age of the seeded generation, which lives an hour (the floor of
		// ca.ttl): past half its life the successor is due at once; within
		// seconds of its end it also expires during the test.
		age    time.Duration
		reason string // the system's words for the failure
		// breakDir makes data (data_dir) unwritable and returns the fix.
		breakDir func(t *testing.T, env *harness.Env, data string) (fix func())
	}{
		{
			name:   "data_dir read-only (chattr +i), last generation expiring",
			age:    time.Hour - 15*time.Second,
			reason: "operation not permitted",
			breakDir: func(t *testing.T, env *harness.Env, data string) func() {
				dir := filepath.Join(data, "ca")
				if err := env.SetImmutable(dir, true); err != nil {
					t.Fatal(err)
				}
				return func() {
					if err := env.SetImmutable(dir, false); err != nil {
						t.Fatal(err)
					}
				}
			},
		},
		{
			name:   "data_dir full (tmpfs)",
			age:    40 * time.Minute,
			reason: "no space left on device",
			breakDir: func(t *testing.T, _ *harness.Env, data string) func() {
				filler, n, err := harness.Fill(data, "filler")
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("filled data_dir with %d bytes", n)
				return func() {
					if err := os.Remove(filler); err != nil {
						t.Fatal(err)
					}
				}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) { testCARotationFails(t, c.age, c.reason, c.breakDir) })
	}
}

func testCARotationFails(t *testing.T, age time.Duration, reason string, breakDir func(*testing.T, *harness.Env, string) func()) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	data, err := env.MeshidDataDir("meshid")
	if err != nil {
		t.Fatal(err)
	}
	if reason == "no space left on device" {
		if data, err = env.Tmpfs(512<<10, "meshid", "data"); err != nil {
			t.Fatal(err)
		}
	}
	seeded, err := harness.SeedCA(data, harness.DemoTrustDomain, time.Hour, age)
	if err != nil {
		t.Fatal(err)
	}
	fix := breakDir(t, env, data)

	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: loadEntries(), Unready: true})
	if err != nil {
		t.Fatal(err)
	}
	body, err := m.WaitReadyz(ctx, 20*time.Second, http.StatusServiceUnavailable, "CA rotation failing", reason)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("/readyz: %s", strings.TrimSpace(body))
	first := metric(t, ctx, m, "meshid_ca_rotation_failures_total")
	if exp := metric(t, ctx, m, "meshid_ca_expiry_seconds"); int64(exp) != seeded.NotAfter.Unix() {
		t.Errorf("meshid_ca_expiry_seconds = %.0f, want the seeded generation's end %d", exp, seeded.NotAfter.Unix())
	}

	// Still signing, with the generation it has.
	resp, err := fetchSecrets(ctx, m.SocketPath, loadID)
	if err != nil {
		t.Fatalf("SDS fetch while the CA cannot rotate: %v", err)
	}
	sec, err := parseSecrets(resp)
	if err != nil || len(sec.svids) != 1 {
		t.Fatalf("SDS fetch while the CA cannot rotate: %d SVIDs, %v", len(sec.svids), err)
	}
	if err := sec.svids[0].CheckSignatureFrom(seeded); err != nil || sec.svids[0].NotAfter.After(seeded.NotAfter) {
		t.Errorf("SVID while failing: %v, expires %s; want signed by the seeded CA and expiring by its end %s", err, sec.svids[0].NotAfter, seeded.NotAfter)
	}

	// Expiry, when the seeded generation ends during the test: nothing is
	// signed any more, and meshid says so and keeps running.
	if until := time.Until(seeded.NotAfter); until < time.Minute {
		time.Sleep(until + 1500*time.Millisecond)
		select {
		case <-m.Done():
			t.Fatalf("meshid exited when its last CA generation expired: %v\n%s", m.Wait(), m.LogTail(20))
		default:
		}
		if _, err := m.WaitReadyz(ctx, 5*time.Second, http.StatusServiceUnavailable, "no valid CA generation", reason); err != nil {
			t.Error(err)
		}
		_, err := fetchSecrets(ctx, m.SocketPath, loadID)
		if err == nil || !strings.Contains(status.Convert(err).Message(), "no valid CA generation") {
			t.Errorf("SDS fetch after the last generation expired: %v, want a failure saying no valid CA generation", err)
		}
		t.Logf("expired: SDS fetch refused: %v", status.Convert(err).Message())
	} else {
		time.Sleep(2500 * time.Millisecond)
	}
	retried := metric(t, ctx, m, "meshid_ca_rotation_failures_total")
	if retried < first+2 {
		t.Errorf("meshid_ca_rotation_failures_total went %.0f -> %.0f in over 2s: the rotation is not retried every second", first, retried)
	}
	if n := strings.Count(m.Logs(), "CA rotation failed"); n != 1 {
		t.Errorf("meshid logged %q %d times, want once however often it retries", "CA rotation failed", n)
	}

	// Writable again: the successor is written and meshid is ready.
	fixed := time.Now()
	fix()
	if _, err := m.WaitReadyz(ctx, 10*time.Second, http.StatusOK, "ready"); err != nil {
		t.Fatal(err)
	}
	recovery := time.Since(fixed)
	if !strings.Contains(m.Logs(), "CA rotation recovered") {
		t.Error("meshid did not log the recovery")
	}
	// The successor is on disk and in the bundle, and what meshid signs
	// now chains to a root it publishes.
	if _, err := os.Stat(filepath.Join(data, "ca", "000002", "ca.crt")); err != nil {
		t.Errorf("no successor generation on disk after the recovery: %v", err)
	}
	resp, err = fetchSecrets(ctx, m.SocketPath, loadID, "spiffe://example.org")
	if err != nil {
		t.Fatalf("SDS fetch after the recovery: %v", err)
	}
	if sec, err = parseSecrets(resp); err != nil || len(sec.svids) != 1 {
		t.Fatalf("SDS fetch after the recovery: %d SVIDs, %v", len(sec.svids), err)
	}
	successor := slices.IndexFunc(sec.roots, func(r *x509.Certificate) bool { return !r.Equal(seeded) })
	signer := slices.IndexFunc(sec.roots, func(r *x509.Certificate) bool { return sec.svids[0].CheckSignatureFrom(r) == nil })
	if successor < 0 || signer < 0 || time.Now().After(sec.svids[0].NotAfter) {
		t.Errorf("after the recovery the bundle has %d roots (a successor: %v) and the SVID (expires %s) chains to one: %v", len(sec.roots), successor >= 0, sec.svids[0].NotAfter, signer >= 0)
	}
	failures := metric(t, ctx, m, "meshid_ca_rotation_failures_total")
	time.Sleep(1500 * time.Millisecond)
	if after := metric(t, ctx, m, "meshid_ca_rotation_failures_total"); after != failures {
		t.Errorf("meshid_ca_rotation_failures_total still rising after the recovery: %.0f -> %.0f", failures, after)
	}
	report(t, "CA successor cannot be written ("+reason+"): no panic, signs with what is valid, /readyz 503 with the reason, every attempt counted, logged once; recovers by itself once writable",
		"%.0f failed attempts counted, 1 ERROR line; ready %v after the fix; %d root(s) in the bundle after it", failures, round(recovery), len(sec.roots))
}
