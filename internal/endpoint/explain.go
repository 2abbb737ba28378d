package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/internal/config"
)

// Explain turns a failed Workload API call into what the user should
// check: meshid's own message for a refusal, and for an unreachable socket,
// which socket and why the kernel would not connect to it.
func (e Endpoint) Explain(err error) error {
	if err == nil {
		return nil
	}
	addr := e.Addr()
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("meshid at %s did not answer in time: %w", addr, err)
		}
		return err
	}
	switch st.Code() {
	case codes.PermissionDenied:
		// meshid's message says what to do: it names the selectors it saw.
		return fmt.Errorf("meshid at %s refused: %s", addr, st.Message())
	case codes.Unavailable:
		return fmt.Errorf("meshid at %s is unreachable: %s", addr, e.diagnose(st.Message()))
	case codes.DeadlineExceeded:
		return fmt.Errorf("meshid at %s did not answer in time (-timeout): %s", addr, st.Message())
	case codes.Unimplemented:
		return fmt.Errorf("%s does not serve the SPIFFE Workload API (%s): is it meshid, and recent enough?", addr, st.Message())
	default:
		return fmt.Errorf("meshid at %s: %s: %s", addr, st.Code(), st.Message())
	}
}

// diagnose says why the socket cannot be reached, by trying it the way
// gRPC did; msg is gRPC's description, kept when the socket looks fine.
func (e Endpoint) diagnose(msg string) string {
	fi, err := os.Stat(e.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Sprintf("no socket at %s; %s", e.path, e.check())
	case errors.Is(err, os.ErrPermission):
		return fmt.Sprintf("uid %d cannot reach %s (a parent directory is not searchable): %v", os.Getuid(), e.path, err)
	case err != nil:
		return fmt.Sprintf("%s: %v", e.path, err)
	case fi.Mode()&os.ModeSocket == 0:
		return fmt.Sprintf("%s is not a socket (%v); %s", e.path, fi.Mode().Type(), e.check())
	}
	conn, err := net.DialTimeout("unix", e.path, time.Second)
	switch {
	case err == nil:
		conn.Close()
		return msg
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("%s exists but nothing listens on it (a stale socket of a stopped meshid?); %s", e.path, e.check())
	case errors.Is(err, syscall.EACCES):
		return fmt.Sprintf("uid %d may not connect to %s (socket mode %v); meshid makes it 0777, so check who created it", os.Getuid(), e.path, fi.Mode().Perm())
	default:
		return fmt.Sprintf("%s: %v", e.path, err)
	}
}

// check is what to look at when the socket is not meshid's, worded after
// where the path came from.
func (e Endpoint) check() string {
	const running = "check that `meshid run` is running"
	if e.source == FromDefault {
		return fmt.Sprintf("%s, and if its socket_path is not %s, pass -socket or set %s", running, config.DefaultSocketPath, FromEnv)
	}
	return fmt.Sprintf("%s and that its socket_path is the one %s names", running, e.source)
}
