//go:build reliability

package reliability

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/meshid/meshid/test/harness"
)

// TestKill9UnderTraffic kills meshid with SIGKILL three times while
// requests cross the real demo mesh (frontend app, two Envoys, the backend
// app) and starts it again. It holds meshid to this meaning of "0 failed
// requests after the restart":
//
//   - before each kill, and once meshid is ready again, every request
//     succeeds (200);
//   - while meshid is down, requests keep flowing: each is answered at
//     once, and with a 403: Envoy holds its secrets, so mTLS still works,
//     and its ext_authz filter fails closed, never open. No request sent
//     during the outage reaches the backend, and Envoy never counts a
//     request let through by failure_mode_allow;
//   - requests in flight across a kill or a restart may go either way, but
//     only as a 200 or a 403: never a connection error, a 5xx or a hang.
func TestKill9UnderTraffic(t *testing.T) {
	const (
		cycles = 3
		// Four workers at most every 20 ms: some 100-200 requests/s, with
		// many in every phase, on a 2-core machine that also runs three
		// Envoys, two apps and meshid.
		workers  = 4
		interval = 20 * time.Millisecond
		steady   = 1500 * time.Millisecond // traffic before each kill and after the last restart
		outage   = time.Second
	)
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: harness.DemoEntries()})
	if err != nil {
		t.Fatal(err)
	}
	mesh, rec := startMesh(t, ctx, env, m)
	if status, body, err := harness.Get(ctx, mesh.FrontendURL+"hello"); err != nil || status != http.StatusOK {
		t.Fatalf("GET /hello before any kill: %d %s %v", status, body, err)
	}

	// What happened when, per cycle.
	type cycle struct{ kill, down, restart, ready time.Time }
	var cs []cycle
	tr := startTraffic(ctx, mesh.FrontendURL+"hello", workers, interval)
	defer tr.stop()
	for range cycles {
		time.Sleep(steady)
		var c cycle
		c.kill = time.Now()
		if err := m.Kill(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		c.down = time.Now()
		time.Sleep(outage)
		c.restart = time.Now()
		if err := m.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		c.ready = time.Now()
		cs = append(cs, c)
	}
	time.Sleep(steady)
	reqs := tr.stop()

	// Judge each request by the window it started and ended in: meshid up
	// (before the first kill, or ready again after a restart) or down
	// (reaped, not yet restarted). Anything else was in flight across a
	// kill or a restart.
	type window struct {
		from, to time.Time
		down     bool
		restarts int // restarts before it
	}
	var windows []window
	from := time.Time{}
	for i, c := range cs {
		windows = append(windows, window{from: from, to: c.kill, restarts: i}, window{from: c.down, to: c.restart, down: true, restarts: i})
		from = c.ready
	}
	windows = append(windows, window{from: from, to: time.Now(), restarts: len(cs)})
	var (
		before, during, after, across int
		duringLat, afterLat           latencies
		bad                           []string
	)
	fail := func(format string, args ...any) {
		if len(bad) < 10 {
			bad = append(bad, fmt.Sprintf(format, args...))
		}
	}
	for _, r := range reqs {
		if r.err != nil || (r.status != http.StatusOK && r.status != http.StatusForbidden) {
			fail("%s: only 200 or 403 may ever come back", r)
			continue
		}
		i := slices.IndexFunc(windows, func(w window) bool { return r.start.After(w.from) && r.end.Before(w.to) })
		switch {
		case i < 0:
			across++
		case windows[i].down:
			during++
			duringLat = append(duringLat, r.end.Sub(r.start))
			if r.status != http.StatusForbidden {
				fail("%s: meshid was down, want 403 (fail closed)", r)
			}
			if rec.reached(r.seq) {
				fail("%s: reached the backend while meshid was down", r)
			}
		default:
			if windows[i].restarts == 0 {
				before++
			} else {
				after++
				afterLat = append(afterLat, r.end.Sub(r.start))
			}
			if r.status != http.StatusOK {
				fail("%s: meshid was up (after %d restarts), want 200", r, windows[i].restarts)
			}
		}
	}
	for _, b := range bad {
		t.Error(b)
	}
	if before == 0 || during == 0 || after == 0 {
		t.Errorf("requests: %d before the first kill, %d while down, %d once ready again: each must have some", before, during, after)
	}
	if n := envoyCounter(t, ctx, mesh.Backend, "http.inbound.ext_authz.failure_mode_allowed"); n != 0 {
		t.Errorf("the backend Envoy let %d requests through on an ext_authz failure", n)
	}
	authzErrors := envoyCounter(t, ctx, mesh.Backend, "http.inbound.ext_authz.error")
	if authzErrors == 0 {
		t.Error("the backend Envoy counted no ext_authz error: the outages were not seen")
	}

	var restarts latencies
	for _, c := range cs {
		restarts = append(restarts, c.ready.Sub(c.restart))
	}
	t.Logf("%d requests: %d before the first kill, %d while meshid was down (%s), %d across a kill or restart, %d once it was ready again (%s)",
		len(reqs), before, during, duringLat, across, after, afterLat)
	t.Logf("meshid restart to ready: %s; backend Envoy ext_authz errors (fail closed): %d", restarts, authzErrors)
	report(t, fmt.Sprintf("kill -9 of meshid x%d under traffic through real Envoys: every request 200 before a kill and once meshid is ready again; 403 (fail closed, backend never reached) while it is down; never an error or 5xx", cycles),
		"%d requests, %d while down (all 403, p99 %v), %d after ready (all 200, p99 %v), %d in flight across; restart to ready max %v",
		len(reqs), during, round(duringLat.p99()), after, round(afterLat.p99()), across, round(restarts.max()))
}
