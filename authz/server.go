package authz

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// Server is the envoy.service.auth.v3.Authorization service. The caller
// owns the listener and the grpc.Server; Server only answers Check.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	engine atomic.Pointer[Engine]
	log    *slog.Logger
}

// NewServer returns a Server deciding with engine. A nil engine denies
// every request until SetEngine gives it one.
func NewServer(engine *Engine, log *slog.Logger) *Server {
	s := &Server{log: log}
	s.engine.Store(engine)
	return s
}

// SetEngine makes every later Check use engine; Checks already running
// finish with the engine they started with.
func (s *Server) SetEngine(engine *Engine) { s.engine.Store(engine) }

// Register adds the Authorization service to r.
func (s *Server) Register(r grpc.ServiceRegistrar) { authv3.RegisterAuthorizationServer(r, s) }

var errNoEngine = errors.New("no policy loaded")

// Check answers one ext_authz request. It never returns a gRPC error: Envoy
// configured with failure_mode_allow lets a request through when the
// authorization service fails, so a policy failure must arrive as a deny.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	allowed, err := false, errNoEngine
	if e := s.engine.Load(); e != nil {
		allowed, err = e.Decide(ctx, req)
	}

	httpReq := req.GetAttributes().GetRequest().GetHttp()
	attrs := []any{
		slog.String("source", req.GetAttributes().GetSource().GetPrincipal()),
		slog.String("method", httpReq.GetMethod()),
		slog.String("path", httpReq.GetPath()),
	}
	switch {
	case err != nil:
		s.log.Warn("authz: denied because the policy reached no decision", append(attrs, slog.Any("err", err))...)
		return denied("no policy decision"), nil
	case !allowed:
		s.log.Debug("authz: denied by policy", attrs...)
		return denied("denied by policy"), nil
	default:
		s.log.Debug("authz: allowed by policy", attrs...)
		return &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
		}, nil
	}
}

// denied is a 403. Why a policy failed goes to the log, not to the caller.
func denied(msg string) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied), Message: msg},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
		}},
	}
}
