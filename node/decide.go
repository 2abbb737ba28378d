package node

import (
	"context"
	"fmt"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/input"
	"github.com/meshid/meshid/internal/config"
)

// Decide decides one CheckRequest with the authz section c as `meshid run`
// would: the same engine settings (EngineConfig), server options
// (ServerOptions) and proto descriptors. What only a running node has is
// left out: there are no JWT keys, so a bearer JWT-SVID is not validated,
// and nothing is logged or counted. It is `meshid policy eval`.
func Decide(ctx context.Context, c config.Authz, req *authv3.CheckRequest) (*authz.Result, error) {
	e, err := authz.NewEngine(ctx, EngineConfig(c))
	if err != nil {
		return nil, err
	}
	opts := ServerOptions(c, nil)
	if c.ProtoDescriptor != "" {
		if opts.Input.ProtoDescriptors, err = input.LoadProtoDescriptors(c.ProtoDescriptor); err != nil {
			return nil, fmt.Errorf("authz.proto_descriptor: %w", err)
		}
	}
	srv, err := authz.NewServer(e, opts)
	if err != nil {
		return nil, err
	}
	return srv.Decide(ctx, req), nil
}
