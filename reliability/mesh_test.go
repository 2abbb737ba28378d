//go:build reliability

package reliability

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshid/meshid/test/harness"
)

// recorder is the backend app of a demo mesh, in the test: it answers 200
// and records which requests reached it, by their seq query parameter.
type recorder struct {
	addr string
	srv  *http.Server

	mu   sync.Mutex
	seen map[int]time.Time // seq -> arrival
}

func startRecorder(t *testing.T, env *harness.Env) *recorder {
	t.Helper()
	r := &recorder{addr: env.FreeAddr(), seen: map[int]time.Time{}}
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if seq, err := strconv.Atoi(req.URL.Query().Get("seq")); err == nil {
			r.mu.Lock()
			r.seen[seq] = time.Now()
			r.mu.Unlock()
		}
		fmt.Fprintf(w, "backend: %s\n", req.URL.Path)
	}), ReadHeaderTimeout: 5 * time.Second}
	go r.srv.Serve(ln)
	t.Cleanup(func() { r.srv.Close() })
	return r
}

func (r *recorder) reached(seq int) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.seen[seq]
	return ok
}

// traffic sends GET url?seq=N through the mesh from a few workers until
// stopped, each at most one request every interval, and keeps every
// outcome for the test to judge against what happened when.
type traffic struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	seq    atomic.Int64

	mu   sync.Mutex
	reqs []request
}

type request struct {
	seq        int
	start, end time.Time
	status     int // 0 when err
	err        error
}

func startTraffic(ctx context.Context, url string, workers int, interval time.Duration) *traffic {
	ctx, cancel := context.WithCancel(ctx)
	tr := &traffic{cancel: cancel}
	for range workers {
		tr.wg.Go(func() {
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for ctx.Err() == nil {
				seq := int(tr.seq.Add(1))
				r := request{seq: seq, start: time.Now()}
				status, _, err := harness.Get(ctx, url+"?seq="+strconv.Itoa(seq))
				r.end = time.Now()
				if ctx.Err() != nil {
					return // cut short by stop: not the mesh's doing
				}
				r.status, r.err = status, err
				tr.mu.Lock()
				tr.reqs = append(tr.reqs, r)
				tr.mu.Unlock()
				select {
				case <-ctx.Done():
				case <-tick.C:
				}
			}
		})
	}
	return tr
}

// stop ends the traffic and returns every request, in the order they ended.
func (tr *traffic) stop() []request {
	tr.cancel()
	tr.wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.reqs
}

func (r request) String() string {
	if r.err != nil {
		return fmt.Sprintf("seq %d at %s: %v", r.seq, r.start.Format("15:04:05.000"), r.err)
	}
	return fmt.Sprintf("seq %d at %s: %d in %v", r.seq, r.start.Format("15:04:05.000"), r.status, round(r.end.Sub(r.start)))
}

// envoyCounter reads one counter from an Envoy's admin /stats.
func envoyCounter(t *testing.T, ctx context.Context, v *harness.Envoy, name string) int {
	t.Helper()
	body, err := v.Admin(ctx, "/stats?filter=^"+name+"$")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if _, err := fmt.Sscanf(strings.TrimSpace(string(body)), name+": %d", &n); err != nil {
		t.Fatalf("counter %s in %q: %v", name, body, err)
	}
	return n
}

// startMesh starts the demo mesh with the recorder as its backend app.
func startMesh(t *testing.T, ctx context.Context, env *harness.Env, m *harness.Meshid) (*harness.DemoMesh, *recorder) {
	t.Helper()
	rec := startRecorder(t, env)
	mesh, err := env.StartDemoWorkloads(ctx, m, m, harness.DemoOptions{BackendAppAddr: rec.addr})
	if err != nil {
		t.Fatal(err)
	}
	return mesh, rec
}
