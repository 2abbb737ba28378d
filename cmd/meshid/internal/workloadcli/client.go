// Package workloadcli is meshid's Workload API client commands: svid
// fetch and watch, jwt fetch and validate, bundle show and healthcheck.
// Each asks meshid on its socket, as the process that runs it, and prints
// the answer for people or, with --json, for scripts; svid watch hands
// helper mode to package helper. The commands find the socket as every
// client does (package endpoint) and never serve anything.
package workloadcli

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/internal/endpoint"
)

// Add puts the commands onto root, in the help group groupID.
func Add(root *cobra.Command, groupID string) {
	healthcheck := newHealthcheckCmd(time.Now)
	healthcheck.GroupID = groupID
	root.AddCommand(
		cli.Group("svid", groupID, "This process's X509-SVIDs from meshid's Workload API",
			`Fetch this process's X509-SVIDs once, or keep them on disk for a program
that reads certificate files (helper mode).`,
			`  meshid svid fetch
  meshid svid watch --write /run/svid -- nginx -g 'daemon off;'`,
			newSVIDFetchCmd(), newSVIDWatchCmd()),
		cli.Group("jwt", groupID, "JWT-SVIDs from meshid's Workload API",
			`Fetch a JWT-SVID for this process, or have meshid validate one.`,
			`  TOKEN=$(meshid jwt fetch --audience payments --token)
  meshid jwt validate "$TOKEN" --audience payments`,
			newJWTFetchCmd(), newJWTValidateCmd()),
		cli.Group("bundle", groupID, "Trust bundles from meshid's Workload API",
			`Print the trust bundles meshid gives this process, as PEM or as a SPIFFE
bundle for federation.`,
			`  meshid bundle show
  meshid bundle show --format spiffe --trust-domain example.org`,
			newBundleShowCmd()),
		healthcheck,
	)
}

// clientFlags are --socket and --timeout, which every command that asks
// meshid on its socket takes.
type clientFlags struct {
	socket  string
	timeout time.Duration
}

func addClientFlags(cmd *cobra.Command) *clientFlags {
	f := &clientFlags{}
	cli.SocketFlag(cmd, &f.socket, "", "meshid's Workload API socket, a `path` or unix:///path (default: $"+
		workloadapi.SocketEnv+", else "+endpoint.Default+")")
	cli.TimeoutFlag(cmd, &f.timeout, 10*time.Second, "how long to wait for meshid's answer")
	return f
}

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

// audiences is a repeatable --audience flag.
type audiences []string

func (a *audiences) String() string { return strings.Join(*a, ",") }
func (a *audiences) Type() string   { return "audience" }
func (a *audiences) Set(v string) error {
	if v == "" {
		return errors.New("empty audience")
	}
	*a = append(*a, v)
	return nil
}
