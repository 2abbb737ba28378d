package node

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// streamEnder ends the agent socket's long-lived streams (SDS, Workload API
// watches) when meshid stops. GracefulStop waits for every stream to end and
// these never end by themselves, so without it each shutdown took the whole
// grace period before cutting them anyway. Ended this way, an Envoy sees its
// stream close at once and reconnects to the next meshid, keeping its
// secrets meanwhile; unary calls in flight still get the grace period.
type streamEnder struct {
	ctx context.Context
	end context.CancelFunc
}

func newStreamEnder() *streamEnder {
	ctx, cancel := context.WithCancel(context.Background())
	return &streamEnder{ctx: ctx, end: cancel}
}

// errShuttingDown ends the streams: Unavailable is what clients (Envoy,
// go-spiffe) take for "this server went away, reconnect", not for an end
// they asked for (Canceled) or a normal end (OK).
var errShuttingDown = status.Error(codes.Unavailable, "meshid is shutting down; reconnect")

// interceptor gives every stream a context that also ends with End.
func (e *streamEnder) interceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		defer context.AfterFunc(e.ctx, cancel)()
		err := handler(srv, ctxStream{ServerStream: ss, ctx: ctx})
		if e.ctx.Err() != nil && ss.Context().Err() == nil {
			return errShuttingDown
		}
		return err
	}
}

// End ends every stream, those open and those yet to start.
func (e *streamEnder) End() { e.end() }

// ctxStream is a ServerStream with another context (the values of the
// original, the peer's attested credentials among them, are kept).
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }
