package main

import (
	"context"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshid/meshid/internal/endpoint"
)

// endpoint is the socket --socket, $SPIFFE_ENDPOINT_SOCKET or the default
// names.
func (f *clientFlags) endpoint() (endpoint.Endpoint, error) { return endpoint.Resolve(f.socket) }

// connect opens a Workload API client whose calls are bounded by
// --timeout and by parent; done releases both.
func (f *clientFlags) connect(parent context.Context) (ctx context.Context, c *workloadapi.Client, e endpoint.Endpoint, done func(), err error) {
	if e, err = f.endpoint(); err != nil {
		return nil, nil, e, nil, err
	}
	ctx, cancel := context.WithTimeout(parent, f.timeout)
	if c, err = e.Client(ctx); err != nil {
		cancel()
		return nil, nil, e, nil, err
	}
	return ctx, c, e, func() { c.Close(); cancel() }, nil
}
