package main

import (
	"context"
	"flag"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshid/meshid/internal/endpoint"
)

// endpointFlags are the flags every Workload API client command shares.
type endpointFlags struct {
	socket  *string
	timeout *time.Duration
}

func addEndpointFlags(flags *flag.FlagSet) endpointFlags {
	return endpointFlags{
		socket: flags.String("socket", "", "the Workload API socket, /PATH or unix:///PATH (default: $"+
			workloadapi.SocketEnv+", else "+endpoint.Default+")"),
		timeout: flags.Duration("timeout", 10*time.Second, "how long to wait for meshid's answer"),
	}
}

// endpoint is the socket -socket, $SPIFFE_ENDPOINT_SOCKET or the default
// names.
func (f endpointFlags) endpoint() (endpoint.Endpoint, error) { return endpoint.Resolve(*f.socket) }

// connect opens a Workload API client whose calls are bounded by
// -timeout; done releases both.
func (f endpointFlags) connect() (ctx context.Context, c *workloadapi.Client, e endpoint.Endpoint, done func(), err error) {
	if e, err = f.endpoint(); err != nil {
		return nil, nil, e, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *f.timeout)
	if c, err = e.Client(ctx); err != nil {
		cancel()
		return nil, nil, e, nil, err
	}
	return ctx, c, e, func() { c.Close(); cancel() }, nil
}
