package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshid/meshid/test/harness"
)

// TestRotationUnderLoad keeps requests crossing the mesh while meshid
// re-mints both Envoys' SVIDs: each Envoy must be seen serving three SVIDs in
// turn (the first and two renewals), each valid when seen and each newer than
// the last; after each rotation new mTLS connections must be made with the
// new SVIDs; and not one request may fail on the way. It runs once with the
// SPIRE-style state-of-the-world SDS bootstrap and once with DELTA_GRPC.
func TestRotationUnderLoad(t *testing.T) {
	for _, api := range []struct {
		name  string
		delta bool
	}{{"sotw", false}, {"delta", true}} {
		t.Run(api.name, func(t *testing.T) { testRotationUnderLoad(t, api.delta) })
	}
}

func testRotationUnderLoad(t *testing.T, delta bool) {
	api := "sotw"
	if delta {
		api = "delta"
	}
	const (
		// meshid renews at half-life, with jitter: a new SVID every ~15 s.
		ttl = 30 * time.Second
		// The first SVID and two renewals.
		wantSerials = 3
		// Two renewals take ~30 s; the rest is slack for a slow machine.
		budget = 75 * time.Second
		// Two workers, each starting a request at most every 50 ms: ~40 req/s,
		// enough to have requests in flight at every rotation without
		// starving a 2-core machine (ext_authz fails closed on a slow policy
		// evaluation, and that is not what this test is about).
		workers  = 2
		interval = 50 * time.Millisecond
		pollCert = 200 * time.Millisecond
	)
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	mesh, err := env.StartDemoMesh(ctx, harness.DemoOptions{X509TTL: ttl, DeltaSDS: delta})
	if err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	traffic := startLoad(ctx, mesh.FrontendURL+"hello", harness.FrontendID, workers, interval)
	defer traffic.stop()

	backend := &svidWatch{name: "backend", envoy: mesh.Backend, id: harness.BackendID, start: start}
	frontend := &svidWatch{name: "frontend", envoy: mesh.Frontend, id: harness.FrontendID, start: start}
	watches := []*svidWatch{backend, frontend}
	// Pooled connections keep the SVIDs of their first handshake for as
	// long as they live, so after each rotation the frontend is made to
	// reconnect: the new SVIDs must work in a handshake, both ways.
	reconnected := 1 // SVIDs per Envoy used in a handshake; the first ones by the load's first connections
	var reconnects []string
	done := func() bool { return reconnected >= wantSerials }
	deadline := start.Add(budget)
	for !done() && time.Now().Before(deadline) {
		for _, w := range watches {
			fresh, err := w.poll(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// A new connection must get the new SVID, not just /certs.
			if fresh && w == backend {
				if err := backend.checkPresented(ctx, mesh.Backend.Sidecar.Inbound.ListenAddr); err != nil {
					t.Fatal(err)
				}
			}
		}
		if n := min(len(backend.seen), len(frontend.seen)); n > reconnected {
			began := time.Now()
			handshakes := reconnect(t, ctx, mesh)
			reconnects = append(reconnects, fmt.Sprintf("%d at +%v in %v", handshakes, backend.since(began), time.Since(began).Round(time.Millisecond)))
			reconnected = n
		}
		select {
		case <-ctx.Done():
			t.Fatalf("watching the Envoys' certificates: %v", ctx.Err())
		case <-time.After(pollCert):
		}
	}
	res := traffic.stop()
	elapsed := time.Since(start).Round(100 * time.Millisecond)

	for _, w := range watches {
		t.Logf("%s Envoy: %d SVID(s) in %v: %s", w.name, len(w.seen), elapsed, w)
	}
	t.Logf("load: %d requests, %d failed, %d with the wrong peer, slowest %v", res.total, res.failed, res.wrongPeer, res.slowest.Round(time.Millisecond))
	// meshid logs every push with its protocol: prove which one served.
	other := map[string]string{"sotw": "delta", "delta": "sotw"}[api]
	if logs := mesh.Meshid.Logs(); !strings.Contains(logs, "api="+api) || strings.Contains(logs, "api="+other) {
		t.Errorf("meshid did not serve these Envoys over %s SDS only", api)
	}
	t.Logf("new mTLS handshakes after each rotation: [%s]; frontend opened %d connections to the backend in all",
		strings.Join(reconnects, ", "), envoyCounter(t, ctx, mesh.Frontend, "cluster.peer.upstream_cx_total"))

	for _, w := range watches {
		if len(w.seen) < wantSerials {
			t.Errorf("%s Envoy showed %d SVID(s) in %v, want %d (the first and %d renewals): rotation stalled; see meshid's \"issued X509-SVID\" lines",
				w.name, len(w.seen), elapsed, wantSerials, wantSerials-1)
		}
	}
	if res.total == 0 {
		t.Error("no request completed")
	}
	if res.failed > 0 || res.wrongPeer > 0 {
		t.Errorf("%d of %d requests failed and %d reached the backend with the wrong peer during rotation; first: %s",
			res.failed, res.total, res.wrongPeer, strings.Join(res.firstErrors, "; "))
	}

	// After the rotations the backend app still hears the frontend's ID.
	status, body, err := harness.Get(ctx, mesh.FrontendURL+"hello")
	if err != nil {
		t.Fatal(err)
	}
	var seen struct{ Peer string }
	if err := json.Unmarshal(body, &seen); err != nil || status != http.StatusOK || seen.Peer != harness.FrontendID {
		t.Fatalf("after rotation GET /hello = %d %s (%v), want 200 with peer %s", status, body, err, harness.FrontendID)
	}
}

// reconnect makes the frontend Envoy open new mTLS connections to the
// backend Envoy, under load, and returns how many handshakes the backend
// completed. An Envoy failing its health check drains: its HTTP connection
// manager answers HTTP/1.1 with "Connection: close", so every request opens a
// new connection. Only a handshake in which the backend accepted the
// frontend's client certificate counts (the ones checkPresented starts
// without one fail).
func reconnect(t *testing.T, ctx context.Context, mesh *harness.DemoMesh) int {
	t.Helper()
	const want = 3
	stat := "listener." + strings.ReplaceAll(mesh.Backend.Sidecar.Inbound.ListenAddr, ":", "_") + ".ssl.handshake"
	before := envoyCounter(t, ctx, mesh.Backend, stat)
	adminPost(t, ctx, mesh.Backend, "/healthcheck/fail")
	defer adminPost(t, ctx, mesh.Backend, "/healthcheck/ok")
	var n int
	waitFor(t, ctx, fmt.Sprintf("%d new mTLS handshakes on the backend Envoy", want), func() bool {
		n = envoyCounter(t, ctx, mesh.Backend, stat) - before
		return n >= want
	})
	return n
}

// adminPost sends POST to one of Envoy's admin endpoints that change state
// (Envoy refuses GET on those).
func adminPost(t *testing.T, ctx context.Context, v *harness.Envoy, path string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.AdminURL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s admin POST %s: %v", v.Name, path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s admin POST %s: status %d", v.Name, path, resp.StatusCode)
	}
}

// svidWatch follows the SVID one Envoy serves, as its admin /certs shows it.
type svidWatch struct {
	name  string
	envoy *harness.Envoy
	id    string
	start time.Time
	seen  []observed // in the order they appeared
}

type observed struct {
	serial  string
	at      time.Duration // since start
	expires time.Time
}

// poll reads /certs once and reports whether a new SVID has appeared. It is
// an error for a certificate of the Envoy's own to be expired or not yet
// valid when seen or to carry another ID, and for a new SVID to expire no
// later than the one before it or to be one that was already replaced.
func (w *svidWatch) poll(ctx context.Context) (fresh bool, err error) {
	certs, err := w.envoy.Certs(ctx)
	now := time.Now()
	if err != nil {
		return false, err
	}
	var own []harness.Cert
	for _, c := range certs {
		if !c.CA {
			own = append(own, c)
		}
	}
	if len(own) == 0 {
		return false, fmt.Errorf("%s Envoy holds no certificate of its own at +%v: %+v", w.name, w.since(now), certs)
	}
	for _, c := range own {
		if len(c.URIs) != 1 || c.URIs[0] != w.id {
			return false, fmt.Errorf("%s Envoy serves a certificate with URI SANs %v, want exactly %s", w.name, c.URIs, w.id)
		}
		if !now.Before(c.ExpirationTime) || now.Before(c.ValidFrom) {
			return false, fmt.Errorf("%s Envoy serves serial %s outside its validity at +%v: valid %s to %s, now %s",
				w.name, c.SerialNumber, w.since(now), c.ValidFrom.Format(time.RFC3339), c.ExpirationTime.Format(time.RFC3339), now.Format(time.RFC3339))
		}
	}
	// One TLS context, one SVID; should Envoy ever list a context it is
	// retiring, the newest SVID is the one it serves.
	c := slices.MaxFunc(own, func(a, b harness.Cert) int { return a.ExpirationTime.Compare(b.ExpirationTime) })
	if n := len(w.seen); n > 0 && w.seen[n-1].serial == c.SerialNumber {
		return false, nil
	}
	if i := slices.IndexFunc(w.seen, func(o observed) bool { return o.serial == c.SerialNumber }); i >= 0 {
		return false, fmt.Errorf("%s Envoy went back to serial %s (first seen at +%v) at +%v, after %s", w.name, c.SerialNumber, w.seen[i].at, w.since(now), w)
	}
	if n := len(w.seen); n > 0 && !c.ExpirationTime.After(w.seen[n-1].expires) {
		return false, fmt.Errorf("%s Envoy moved to serial %s expiring %s, no later than the one it replaced (%s, %s)",
			w.name, c.SerialNumber, c.ExpirationTime.Format(time.RFC3339), w.seen[n-1].serial, w.seen[n-1].expires.Format(time.RFC3339))
	}
	w.seen = append(w.seen, observed{serial: c.SerialNumber, at: w.since(now), expires: c.ExpirationTime})
	return true, nil
}

// checkPresented dials addr and requires the certificate presented there to
// be the latest one /certs showed, or (if it rotated in between) the next.
func (w *svidWatch) checkPresented(ctx context.Context, addr string) error {
	chain, _ := handshake(addr)
	if len(chain) == 0 {
		return fmt.Errorf("%s Envoy presented no certificate on %s", w.name, addr)
	}
	got := fmt.Sprintf("%x", chain[0].SerialNumber)
	if got == w.seen[len(w.seen)-1].serial {
		return nil
	}
	if _, err := w.poll(ctx); err != nil {
		return err
	}
	if want := w.seen[len(w.seen)-1].serial; got != want {
		return fmt.Errorf("%s Envoy presents serial %s to a new connection while /certs shows %s", w.name, got, want)
	}
	return nil
}

func (w *svidWatch) since(t time.Time) time.Duration {
	return t.Sub(w.start).Round(100 * time.Millisecond)
}

// String lists the SVIDs seen: "serial at +Ns (expires +Ms)", oldest first.
func (w *svidWatch) String() string {
	var parts []string
	for _, o := range w.seen {
		parts = append(parts, fmt.Sprintf("%s at +%v (expires +%v)", o.serial, o.at, w.since(o.expires)))
	}
	return strings.Join(parts, ", ")
}

// load sends GET url from a few workers until stopped, each starting a
// request at most every interval, and counts what went wrong.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu  sync.Mutex
	res loadResult
}

type loadResult struct {
	total, failed int
	// wrongPeer counts 200s whose body says the backend saw another caller.
	wrongPeer   int
	firstErrors []string // of the first few failures
	slowest     time.Duration
}

func startLoad(ctx context.Context, url, wantPeer string, workers int, interval time.Duration) *load {
	ctx, cancel := context.WithCancel(ctx)
	l := &load{cancel: cancel}
	for range workers {
		l.wg.Go(func() {
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				began := time.Now()
				status, body, err := harness.Get(ctx, url)
				if ctx.Err() != nil {
					return // stopped mid-request: not the mesh's failure
				}
				l.record(time.Since(began), status, body, err, wantPeer)
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	return l
}

func (l *load) record(took time.Duration, status int, body []byte, err error, wantPeer string) {
	var problem string
	wrongPeer := false
	switch {
	case err != nil:
		problem = err.Error()
	case status != http.StatusOK:
		problem = fmt.Sprintf("status %d: %.200s", status, body)
	default:
		var seen struct{ Peer string }
		if err := json.Unmarshal(body, &seen); err != nil || seen.Peer != wantPeer {
			wrongPeer = true
			problem = fmt.Sprintf("backend saw peer %q, want %s: %.200s", seen.Peer, wantPeer, body)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res.total++
	l.res.slowest = max(l.res.slowest, took)
	if problem == "" {
		return
	}
	if wrongPeer {
		l.res.wrongPeer++
	} else {
		l.res.failed++
	}
	if len(l.res.firstErrors) < 3 {
		l.res.firstErrors = append(l.res.firstErrors, fmt.Sprintf("%s: %s", time.Now().Format("15:04:05.000"), problem))
	}
}

// stop ends the load, waits for the workers and returns what they saw. It
// may be called more than once.
func (l *load) stop() loadResult {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.res
}
