// Package endpoint is the one convention by which meshid's client commands
// find the Workload API socket: which value counts (-socket, then
// $SPIFFE_ENDPOINT_SOCKET, then the default), what forms it may take (a
// plain absolute path or a unix:// URI), the go-spiffe client for it, and
// what to tell the user when a call through it fails. It never serves the
// socket and never decides what a command asks meshid.
package endpoint

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshid/meshid/internal/config"
)

// Default is the socket used when neither -socket nor
// $SPIFFE_ENDPOINT_SOCKET is set: where `meshid run` listens unless
// socket_path says otherwise.
const Default = "unix://" + config.DefaultSocketPath

// Source is where an endpoint's value came from; errors name it so that
// the user knows what to change.
type Source int

const (
	FromFlag    Source = iota // the -socket flag
	FromEnv                   // $SPIFFE_ENDPOINT_SOCKET
	FromDefault               // neither was set
)

func (s Source) String() string {
	switch s {
	case FromFlag:
		return "-socket"
	case FromEnv:
		return "$" + workloadapi.SocketEnv
	default:
		return "the default socket"
	}
}

// Endpoint is a parsed Workload API address: always a Unix socket, since
// meshid attests callers by the kernel's view of the connecting process.
type Endpoint struct {
	path   string
	source Source
}

// Resolve picks the endpoint a client command uses: flagValue when it is
// set, else $SPIFFE_ENDPOINT_SOCKET when that is, else Default.
func Resolve(flagValue string) (Endpoint, error) {
	if flagValue != "" {
		return Parse(flagValue, FromFlag)
	}
	if v, ok := os.LookupEnv(workloadapi.SocketEnv); ok && v != "" {
		return Parse(v, FromEnv)
	}
	return Parse(Default, FromDefault)
}

// Parse reads value, which came from source, as /path/to/agent.sock or
// unix:///path/to/agent.sock.
func Parse(value string, source Source) (Endpoint, error) {
	path, err := socketPath(value)
	if err != nil {
		return Endpoint{}, fmt.Errorf("%s %q: %w (want /path/to/agent.sock or unix:///path/to/agent.sock)", source, value, err)
	}
	return Endpoint{path: path, source: source}, nil
}

func socketPath(value string) (string, error) {
	if strings.HasPrefix(value, "/") {
		return value, nil
	}
	u, err := url.Parse(value)
	switch {
	case err != nil:
		return "", fmt.Errorf("neither an absolute path nor a URI: %w", err)
	case u.Scheme == "":
		return "", fmt.Errorf("a relative path")
	case u.Scheme != "unix":
		return "", fmt.Errorf("scheme %q: meshid serves the Workload API on a Unix socket only", u.Scheme)
	case u.Host != "":
		// unix://run/meshid/agent.sock: a slash short, and gRPC would
		// reject it only when dialling.
		return "", fmt.Errorf("%q is read as a host; a unix URI has three slashes before an absolute path", u.Host)
	case u.Path == "" || !strings.HasPrefix(u.Path, "/"):
		return "", fmt.Errorf("no absolute path")
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("a socket URI has nothing but a path")
	}
	return u.Path, nil
}

// Addr is the endpoint as a URI, unix:///path, the form go-spiffe and
// gRPC dial and messages show.
func (e Endpoint) Addr() string { return "unix://" + e.path }

// Path is the socket file.
func (e Endpoint) Path() string { return e.path }

// Source is where the value came from.
func (e Endpoint) Source() Source { return e.source }

func (e Endpoint) String() string { return e.Addr() }

// Client opens a go-spiffe Workload API client for the endpoint; it
// connects lazily, on its first call.
func (e Endpoint) Client(ctx context.Context, opts ...workloadapi.ClientOption) (*workloadapi.Client, error) {
	c, err := workloadapi.New(ctx, append([]workloadapi.ClientOption{workloadapi.WithAddr(e.Addr())}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("Workload API at %s: %w", e.Addr(), err)
	}
	return c, nil
}
