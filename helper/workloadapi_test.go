package helper

import (
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"

	"github.com/meshid/meshid/internal/endpoint"
)

// workloadAPI serves FetchX509SVID as meshid does: the current SVID when a
// stream opens, then each new one.
type workloadAPI struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
	ca      *testCA
	mu      sync.Mutex
	current *workloadpb.X509SVIDResponse
	changed chan struct{} // closed and replaced on each push
}

func newWorkloadAPI(ca *testCA) *workloadAPI {
	return &workloadAPI{ca: ca, changed: make(chan struct{})}
}

func (a *workloadAPI) push(t *testing.T, s *x509svid.SVID) {
	t.Helper()
	cert, key, err := s.MarshalRaw()
	if err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.current = &workloadpb.X509SVIDResponse{Svids: []*workloadpb.X509SVID{{
		SpiffeId: s.ID.String(), X509Svid: cert, X509SvidKey: key, Bundle: a.ca.root.Raw,
	}}}
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *workloadAPI) FetchX509SVID(_ *workloadpb.X509SVIDRequest, stream workloadpb.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	for {
		a.mu.Lock()
		resp, changed := a.current, a.changed
		a.mu.Unlock()
		if resp != nil {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// serveAt serves api on the socket at path until the returned stop; unlike
// grpctest.Serve, a test can stop it and serve again on the same path, as
// a restarting meshid does.
func serveAt(t *testing.T, path string, api *workloadAPI) (stop func()) {
	t.Helper()
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	workloadpb.RegisterSpiffeWorkloadAPIServer(srv, api)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(lis)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { srv.Stop(); <-done }) }
	t.Cleanup(stop)
	return stop
}

// TestRunAgainstARealWorkloadAPI runs the helper with go-spiffe's client
// over a real socket through a meshid restart and then meshid's end.
func TestRunAgainstARealWorkloadAPI(t *testing.T) {
	ca := newTestCA(t, "example.org")
	api := newWorkloadAPI(ca)
	first, second := ca.fresh(t), ca.fresh(t)
	api.push(t, first)
	sock := filepath.Join(t.TempDir(), "agent.sock")
	stop := serveAt(t, sock, api)

	e, err := endpoint.Parse(sock, endpoint.FromFlag)
	if err != nil {
		t.Fatal(err)
	}
	client, err := e.Client(t.Context(), workloadapi.WithBackoffStrategy(Backoff{}))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	w := newRunWorld(t, func(c *Config, w *runWorld) {
		c.Source, c.Explain, c.Cmd = client, e.Explain, w.counter()
		c.UnreachableTimeout = 500 * time.Millisecond
	})
	done := w.start(t.Context())

	waitFor(t, "the program to start on the first SVID", func() bool { return fileExists(w.ready) })
	if got := onDisk(t, w.dir); !got.Certificates[0].Equal(first.Certificates[0]) {
		t.Fatal("svid.pem is not the first SVID")
	}
	api.push(t, second)
	waitFor(t, "the rotation's SIGHUP", func() bool { return readInt(w.count) == 1 })
	if got := onDisk(t, w.dir); !got.Certificates[0].Equal(second.Certificates[0]) {
		t.Fatal("svid.pem is not the second SVID")
	}

	// meshid restarts within the timeout: the helper reconnects, and the
	// same SVID resent is no rotation.
	stop()
	stop = serveAt(t, sock, api)
	waitFor(t, "the reconnect", func() bool { return strings.Contains(w.log.String(), "meshid reachable again") })
	if n := readInt(w.count); n != 1 {
		t.Fatalf("%d SIGHUPs after a reconnect that brought nothing new, want 1", n)
	}

	// meshid goes for good: the helper stops the program and says why.
	stop()
	r := <-done
	if r.code != 7 || r.err == nil || !strings.Contains(r.err.Error(), "(-unreachable-timeout): meshid at unix://"+sock+" is unreachable: no socket at "+sock) {
		t.Fatalf("Run = %d, %v", r.code, r.err)
	}
}
