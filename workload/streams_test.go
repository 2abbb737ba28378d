package workload

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/meshid/meshid/test/grpctest"
)

// TestStreamsAndTheirMetrics: an open stream is listed and counted, each
// response it gets too, and a closed one is neither. A response is
// recorded before it is sent, so once a client has it, Streams shows it.
func TestStreamsAndTheirMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFake(t, webID)
	srv := New(Options{Identities: f, Registerer: reg})
	conn := grpctest.Serve(t, "unix", func(s *grpc.Server) { srv.Register(s) })
	c := workloadpb.NewSpiffeWorkloadAPIClient(conn)
	if n, err := testutil.GatherAndCount(reg, "meshid_workload_streams", "meshid_workload_responses_total"); err != nil || n != 6 {
		t.Fatalf("before any stream: %d series (%v), want each of the 3 methods in both families", n, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	streamCtx, endStream := context.WithCancel(metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true"))
	stream, err := c.FetchX509SVID(streamCtx, &workloadpb.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.x = newFake(t, webID).x
	f.mu.Unlock()
	f.changed <- struct{}{}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	streams := srv.Streams()
	if len(streams) != 1 || streams[0].Method != "FetchX509SVID" || streams[0].Responses != 2 || streams[0].Subscription != f || streams[0].LastResponse.IsZero() {
		t.Fatalf("Streams = %+v, want the one FetchX509SVID stream with 2 responses", streams)
	}
	open := srv.metrics.streams.WithLabelValues(methodX509SVID)
	if got := testutil.ToFloat64(open); got != 1 {
		t.Errorf("meshid_workload_streams{method=FetchX509SVID} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(srv.metrics.responses.WithLabelValues(methodX509SVID)); got != 2 {
		t.Errorf("meshid_workload_responses_total{method=FetchX509SVID} = %v, want 2", got)
	}
	endStream()
	for len(srv.Streams()) != 0 || testutil.ToFloat64(open) != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("a closed stream is still listed or counted: %+v", srv.Streams())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
