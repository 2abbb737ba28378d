package node

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// grpcMetrics are the standard gRPC server series (grpc_server_started_total,
// _handled_total{grpc_code}, _msg_received_total, _msg_sent_total,
// _handling_seconds) of one of meshid's gRPC servers, told apart by the
// server label: "agent" for the workload socket (SDS, Workload API,
// health), "authz" for ext_authz. They are the series of go-grpc-middleware's
// Prometheus provider, name for name, label for label, counted alike
// (TestGRPCMetricsMatchProvider), and every method's series exist from the
// start (init), so that an alert on a code works before the first call
// that returns it.
//
// meshid counts them itself because the provider looks every series up by
// its label values on every call (five lookups, each hashing the labels,
// and a dozen allocations): on the ext_authz server, where a check from
// the decision cache takes a few microseconds, that was a sixth of the
// decision's cost. Here the series of each registered method are looked
// up once, at init, and a call finds them by its method name.
type grpcMetrics struct {
	started, handled, received, sent *prometheus.CounterVec
	handling                         *prometheus.HistogramVec
	// methods are the series of each registered method by full method
	// name, set by init before the server serves and never changed.
	methods atomic.Pointer[map[string]*methodMetrics]
}

// methodMetrics are one method's series.
type methodMetrics struct {
	started, received, sent prometheus.Counter
	handling                prometheus.Observer
	handled                 [numCodes]prometheus.Counter // by code
	labels                  []string                     // grpc_type, grpc_service, grpc_method
	handledVec              *prometheus.CounterVec       // for a code gRPC does not define
}

// numCodes is the number of gRPC's codes (0 to Unauthenticated), whose
// handled series exist from the start.
const numCodes = int(codes.Unauthenticated) + 1

// grpcHandlingBuckets span an ext_authz check (tens of µs) to a unary
// Workload API call that mints (ms); streams last as long as their
// caller and land in the last bucket.
var grpcHandlingBuckets = []float64{100e-6, 500e-6, 1e-3, 5e-3, 10e-3, 50e-3, 100e-3, 500e-3, 1, 5}

// The series' label names.
var (
	grpcLabels     = []string{"grpc_type", "grpc_service", "grpc_method"}
	grpcCodeLabels = []string{"grpc_type", "grpc_service", "grpc_method", "grpc_code"}
)

func newGRPCMetrics(reg prometheus.Registerer, server string) *grpcMetrics {
	labels := prometheus.Labels{"server": server}
	counter := func(name, help string, labelNames []string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, labelNames)
	}
	m := &grpcMetrics{
		started:  counter("grpc_server_started_total", "Total number of RPCs started on the server.", grpcLabels),
		handled:  counter("grpc_server_handled_total", "Total number of RPCs completed on the server, regardless of success or failure.", grpcCodeLabels),
		received: counter("grpc_server_msg_received_total", "Total number of RPC stream messages received on the server.", grpcLabels),
		sent:     counter("grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.", grpcLabels),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "grpc_server_handling_seconds",
			Help:        "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
			ConstLabels: labels,
			Buckets:     grpcHandlingBuckets,
		}, grpcLabels),
	}
	if reg != nil {
		reg.MustRegister(m.started, m.handled, m.received, m.sent, m.handling)
	}
	return m
}

// options are the server options that count every call.
func (m *grpcMetrics) options() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(m.unary), grpc.ChainStreamInterceptor(m.stream)}
}

// init creates the series of every method registered on s, at 0. It is
// called once, after the services are registered and before s serves.
func (m *grpcMetrics) init(s *grpc.Server) {
	methods := map[string]*methodMetrics{}
	for service, info := range s.GetServiceInfo() {
		for _, mi := range info.Methods {
			methods["/"+service+"/"+mi.Name] = m.method(methodType(mi.IsClientStream, mi.IsServerStream), service, mi.Name)
		}
	}
	m.methods.Store(&methods)
}

// method resolves one method's series.
func (m *grpcMetrics) method(typ, service, name string) *methodMetrics {
	mm := &methodMetrics{
		started:    m.started.WithLabelValues(typ, service, name),
		received:   m.received.WithLabelValues(typ, service, name),
		sent:       m.sent.WithLabelValues(typ, service, name),
		handling:   m.handling.WithLabelValues(typ, service, name),
		labels:     []string{typ, service, name},
		handledVec: m.handled,
	}
	for c := range codes.Code(numCodes) {
		mm.handled[c] = m.handled.WithLabelValues(typ, service, name, c.String())
	}
	return mm
}

// lookup is the series of the method called as fullMethod, of type typ:
// those resolved at init, or, for a method registered since (none is),
// resolved now.
func (m *grpcMetrics) lookup(fullMethod, typ string) *methodMetrics {
	if methods := m.methods.Load(); methods != nil {
		if mm, ok := (*methods)[fullMethod]; ok {
			return mm
		}
	}
	service, name := "unknown", "unknown"
	if s, n, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/"); ok {
		service, name = s, n
	}
	return m.method(typ, service, name)
}

// methodType is the grpc_type of a method.
func methodType(clientStream, serverStream bool) string {
	switch {
	case !clientStream && !serverStream:
		return "unary"
	case clientStream && !serverStream:
		return "client_stream"
	case !clientStream && serverStream:
		return "server_stream"
	default:
		return "bidi_stream"
	}
}

func (m *grpcMetrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	mm := m.lookup(info.FullMethod, "unary")
	mm.started.Inc()
	mm.received.Inc()
	resp, err := handler(ctx, req)
	if err == nil {
		mm.sent.Inc()
	}
	mm.done(err, start)
	return resp, err
}

func (m *grpcMetrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	mm := m.lookup(info.FullMethod, methodType(info.IsClientStream, info.IsServerStream))
	mm.started.Inc()
	err := handler(srv, &countedStream{ServerStream: ss, m: mm})
	mm.done(err, start)
	return err
}

// done counts a call that ended with err, begun at start.
func (mm *methodMetrics) done(err error, start time.Time) {
	code := errorCode(err)
	if int(code) < numCodes {
		mm.handled[code].Inc()
	} else {
		mm.handledVec.WithLabelValues(append(mm.labels[:3:3], code.String())...).Inc()
	}
	mm.handling.Observe(time.Since(start).Seconds())
}

// errorCode is the code a call returning err ends with, as the server
// sends it: context errors become Canceled and DeadlineExceeded.
func errorCode(err error) codes.Code {
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return status.FromContextError(err).Code()
}

// countedStream counts a stream's messages.
type countedStream struct {
	grpc.ServerStream
	m *methodMetrics
}

func (s *countedStream) SendMsg(msg any) error {
	err := s.ServerStream.SendMsg(msg)
	if err == nil {
		s.m.sent.Inc()
	}
	return err
}

func (s *countedStream) RecvMsg(msg any) error {
	err := s.ServerStream.RecvMsg(msg)
	if err == nil {
		s.m.received.Inc()
	}
	return err
}
