package node

import (
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// grpcMetrics are the standard gRPC server series (grpc_server_started_total,
// _handled_total{grpc_code}, _msg_received_total, _msg_sent_total,
// _handling_seconds) of one of meshid's gRPC servers, told apart by the
// server label: "agent" for the workload socket (SDS, Workload API,
// health), "authz" for ext_authz. go-grpc-middleware's provider counts;
// meshid only names the server and makes every method's series exist
// from the start (with Init), so that an alert on a code works before the
// first call that returns it.
type grpcMetrics struct{ *grpcprom.ServerMetrics }

// grpcHandlingBuckets span an ext_authz check (tens of µs) to a unary
// Workload API call that mints (ms); streams last as long as their
// caller and land in the last bucket.
var grpcHandlingBuckets = []float64{100e-6, 500e-6, 1e-3, 5e-3, 10e-3, 50e-3, 100e-3, 500e-3, 1, 5}

func newGRPCMetrics(reg prometheus.Registerer, server string) grpcMetrics {
	labels := prometheus.Labels{"server": server}
	m := grpcprom.NewServerMetrics(
		grpcprom.WithServerCounterOptions(grpcprom.WithConstLabels(labels)),
		grpcprom.WithServerHandlingTimeHistogram(grpcprom.WithHistogramConstLabels(labels), grpcprom.WithHistogramBuckets(grpcHandlingBuckets)),
	)
	if reg != nil {
		reg.MustRegister(m)
	}
	return grpcMetrics{m}
}

// options are the server options that count every call.
func (m grpcMetrics) options() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(m.StreamServerInterceptor())}
}

// init creates the series of every method registered on s, at 0.
func (m grpcMetrics) init(s *grpc.Server) { m.InitializeMetrics(s) }
