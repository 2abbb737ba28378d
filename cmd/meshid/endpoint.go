package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// defaultEndpoint is where meshid run listens unless socket_path says
// otherwise (DESIGN.md § One socket).
const defaultEndpoint = "unix:///tmp/meshid/agent.sock"

// endpointFlags are the flags every Workload API client command shares.
type endpointFlags struct {
	socket  *string
	timeout *time.Duration
}

func addEndpointFlags(flags *flag.FlagSet) endpointFlags {
	def := defaultEndpoint
	if v, ok := os.LookupEnv(workloadapi.SocketEnv); ok && v != "" {
		def = v
	}
	return endpointFlags{
		socket:  flags.String("socket", def, "the Workload API endpoint, unix:///PATH (default: $SPIFFE_ENDPOINT_SOCKET, else "+defaultEndpoint+")"),
		timeout: flags.Duration("timeout", 10*time.Second, "how long to wait for meshid's answer"),
	}
}

// connect parses -socket and opens a Workload API client whose calls are
// bounded by -timeout; done releases both.
func (f endpointFlags) connect() (ctx context.Context, c *workloadapi.Client, e endpoint, done func(), err error) {
	if e, err = parseEndpoint(*f.socket); err != nil {
		return nil, nil, endpoint{}, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *f.timeout)
	if c, err = e.client(ctx); err != nil {
		cancel()
		return nil, nil, endpoint{}, nil, err
	}
	return ctx, c, e, func() { c.Close(); cancel() }, nil
}

// endpoint is a parsed Workload API address.
type endpoint struct {
	addr string // as given, for go-spiffe
	path string // the socket file, when unix://
}

func parseEndpoint(addr string) (endpoint, error) {
	if err := workloadapi.ValidateAddress(addr); err != nil {
		return endpoint{}, fmt.Errorf("-socket %q: %w (want unix:///path/to/agent.sock)", addr, err)
	}
	e := endpoint{addr: addr}
	if u, err := url.Parse(addr); err == nil && u.Scheme == "unix" {
		e.path = u.Path
	}
	return e, nil
}

// client dials the endpoint; the connection is made lazily by the first call.
func (e endpoint) client(ctx context.Context, opts ...workloadapi.ClientOption) (*workloadapi.Client, error) {
	c, err := workloadapi.New(ctx, append([]workloadapi.ClientOption{workloadapi.WithAddr(e.addr)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("Workload API at %s: %w", e.addr, err)
	}
	return c, nil
}

// explain turns a Workload API failure into what the user should check: the
// daemon's own message for refusals, and for an unreachable socket, which
// socket and why the kernel would not connect to it.
func (e endpoint) explain(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("meshid at %s did not answer in time: %w", e.addr, err)
		}
		return err
	}
	switch st.Code() {
	case codes.PermissionDenied:
		// The daemon's message says what to do (which selectors it saw).
		return fmt.Errorf("meshid at %s refused: %s", e.addr, st.Message())
	case codes.Unavailable:
		return fmt.Errorf("meshid at %s is unreachable: %s", e.addr, e.diagnose(st.Message()))
	case codes.DeadlineExceeded:
		return fmt.Errorf("meshid at %s did not answer in time (-timeout): %s", e.addr, st.Message())
	case codes.Unimplemented:
		return fmt.Errorf("%s does not serve the SPIFFE Workload API (%s): is it meshid, and recent enough?", e.addr, st.Message())
	default:
		return fmt.Errorf("meshid at %s: %s: %s", e.addr, st.Code(), st.Message())
	}
}

// diagnose says why the socket cannot be reached, by trying it the way gRPC
// did; msg is gRPC's description, used when the socket itself looks fine.
func (e endpoint) diagnose(msg string) string {
	if e.path == "" {
		return msg
	}
	check := "check that `meshid run` is running and that its socket_path matches -socket or $" + workloadapi.SocketEnv
	fi, err := os.Stat(e.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Sprintf("no socket at %s; %s", e.path, check)
	case errors.Is(err, os.ErrPermission):
		return fmt.Sprintf("uid %d cannot reach %s (a parent directory is not searchable): %v", os.Getuid(), e.path, err)
	case err != nil:
		return fmt.Sprintf("%s: %v", e.path, err)
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Sprintf("%s is not a socket (%v); %s", e.path, fi.Mode().Type(), check)
	}
	conn, err := net.DialTimeout("unix", e.path, time.Second)
	switch {
	case err == nil:
		conn.Close()
		return msg
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("%s exists but nothing listens on it (a stale socket of a stopped meshid?); %s", e.path, check)
	case errors.Is(err, syscall.EACCES):
		return fmt.Sprintf("uid %d may not connect to %s (socket mode %v); meshid makes it 0777, so check who created it", os.Getuid(), e.path, fi.Mode().Perm())
	default:
		return fmt.Sprintf("%s: %v", e.path, err)
	}
}

// relTime says when t is relative to now, to the second: "in 4m59s",
// "3s ago".
func relTime(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	switch {
	case d > 0:
		return "in " + d.String()
	case d < 0:
		return (-d).String() + " ago"
	default:
		return "now"
	}
}
