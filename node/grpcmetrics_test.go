package node

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// TestGRPCMetricsMatchProvider: meshid's gRPC series are go-grpc-middleware's
// Prometheus provider's, as meshid configured it before counting them
// itself: the same calls on two real servers, one counted by each, give
// the same families (names, help, types, labels) and the same values;
// only the histograms' sums and buckets, which are times, may differ.
// The calls end with every kind of outcome: OK, a code of the health
// service's (NotFound), a stream cancelled by its client, a code gRPC does
// not define, a method no service has.
func TestGRPCMetricsMatchProvider(t *testing.T) {
	ours := prometheus.NewPedanticRegistry()
	theirs := prometheus.NewPedanticRegistry()
	for _, s := range []struct {
		reg      *prometheus.Registry
		provider bool
	}{{ours, false}, {theirs, true}} {
		var opts []grpc.ServerOption
		var init func(*grpc.Server)
		if s.provider {
			labels := prometheus.Labels{"server": "authz"}
			m := grpcprom.NewServerMetrics(
				grpcprom.WithServerCounterOptions(grpcprom.WithConstLabels(labels)),
				grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramConstLabels(labels), grpcprom.WithHistogramBuckets(grpcHandlingBuckets)),
			)
			s.reg.MustRegister(m)
			opts = []grpc.ServerOption{grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(m.StreamServerInterceptor())}
			init = func(srv *grpc.Server) { m.InitializeMetrics(srv) }
		} else {
			m := newGRPCMetrics(s.reg, "authz")
			opts = m.options()
			init = m.init
		}
		conn := serveCounted(t, opts, init)
		callEveryOutcome(t, conn)
	}
	// A stream's handled series moves when its handler returns, after the
	// client has gone: wait for both servers to have counted it.
	deadline := time.Now().Add(5 * time.Second)
	for !watchHandled(t, ours) || !watchHandled(t, theirs) {
		if time.Now().After(deadline) {
			t.Fatal("the cancelled Watch stream was not counted as handled")
		}
		time.Sleep(10 * time.Millisecond)
	}

	got, want := gatherGRPC(t, ours), gatherGRPC(t, theirs)
	if len(got) != 5 {
		t.Fatalf("%d grpc_server_* families, want 5", len(got))
	}
	if len(got) != len(want) {
		t.Fatalf("%d families, the provider %d", len(got), len(want))
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("family %s:\n got  %v\n want %v", want[i].GetName(), got[i], want[i])
		}
	}
	// The values compared above are the calls made, not zeros on both sides.
	for _, f := range got {
		if f.GetName() != "grpc_server_handled_total" {
			continue
		}
		for _, m := range f.Metric {
			if labelValue(m, "grpc_method") == "Check" && labelValue(m, "grpc_code") == "NotFound" && m.GetCounter().GetValue() != 1 {
				t.Errorf("Check NotFound handled %v times, want 1", m.GetCounter().GetValue())
			}
		}
	}
}

// serveCounted serves the health service and a service failing with a
// code gRPC does not define on a real loopback socket, with the
// interceptors of opts, and returns a client connection to it.
func serveCounted(t *testing.T, opts []grpc.ServerOption, init func(*grpc.Server)) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	srv.RegisterService(&failDesc, nil)
	init(srv)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// failDesc is a service whose one method fails with code 42.
var failDesc = grpc.ServiceDesc{
	ServiceName: "meshid.test.Fail",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Fail",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			fail := func(context.Context, any) (any, error) { return nil, status.Error(codes.Code(42), "no such code") }
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/meshid.test.Fail/Fail"}
			return interceptor(ctx, in, info, fail)
		},
	}},
}

func callEveryOutcome(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	ctx := context.Background()
	client := healthpb.NewHealthClient(conn)
	for range 3 {
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Check of an unknown service: %v, want NotFound", err)
	}
	watchCtx, cancel := context.WithCancel(ctx)
	w, err := client.Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := conn.Invoke(ctx, "/meshid.test.Fail/Fail", &emptypb.Empty{}, &emptypb.Empty{}); status.Code(err) != codes.Code(42) {
		t.Fatalf("Fail: %v, want code 42", err)
	}
	if err := conn.Invoke(ctx, "/meshid.test.None/None", &emptypb.Empty{}, &emptypb.Empty{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("a method no service has: %v, want Unimplemented", err)
	}
}

// watchHandled says whether reg counts the Watch stream as handled.
func watchHandled(t *testing.T, reg *prometheus.Registry) bool {
	for _, f := range gatherGRPC(t, reg) {
		if f.GetName() != "grpc_server_handled_total" {
			continue
		}
		for _, m := range f.Metric {
			if labelValue(m, "grpc_method") == "Watch" && m.GetCounter().GetValue() > 0 {
				return true
			}
		}
	}
	return false
}

// gatherGRPC is reg's grpc_server_* families, with the times (histogram
// sums and buckets) and creation timestamps cleared.
func gatherGRPC(t *testing.T, reg *prometheus.Registry) []*dto.MetricFamily {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	families = slices.DeleteFunc(families, func(f *dto.MetricFamily) bool { return !strings.HasPrefix(f.GetName(), "grpc_server_") })
	for _, f := range families {
		for _, m := range f.Metric {
			if c := m.Counter; c != nil {
				c.CreatedTimestamp, c.Exemplar = nil, nil
			}
			if h := m.Histogram; h != nil {
				h.SampleSum, h.Bucket, h.CreatedTimestamp = nil, nil, nil
			}
		}
	}
	return families
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
