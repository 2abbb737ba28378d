package endpoint

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/test/grpctest"
)

// refusingAPI is a Workload API that has no identity for anyone, as meshid
// answers a caller no entry matches.
type refusingAPI struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
}

func (refusingAPI) FetchX509SVID(*workloadpb.X509SVIDRequest, workloadpb.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	return status.Error(codes.PermissionDenied, "no identity issued: no entry matches selectors [unix:uid:1301]; add an entry")
}

// fetch makes one real go-spiffe call through e and explains its failure.
func fetch(t *testing.T, e Endpoint) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := e.Client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.FetchX509Context(ctx)
	if err == nil {
		t.Fatal("FetchX509Context succeeded")
	}
	return e.Explain(err).Error()
}

func TestExplainRealCalls(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	notSock := filepath.Join(dir, "file")
	if err := os.WriteFile(notSock, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	refusing := grpctest.Serve(t, "unix", func(s *grpc.Server) { workloadpb.RegisterSpiffeWorkloadAPIServer(s, refusingAPI{}) })
	other := grpctest.Serve(t, "unix", func(*grpc.Server) {})

	tests := []struct {
		name   string
		value  string
		source Source
		want   string
	}{
		{"refusal passes meshid's message", refusing.Target(), FromFlag,
			"meshid at " + refusing.Target() + " refused: no identity issued: no entry matches selectors [unix:uid:1301]; add an entry"},
		{"not meshid", other.Target(), FromFlag, "does not serve the SPIFFE Workload API"},
		{"no socket, from the flag", filepath.Join(dir, "none.sock"), FromFlag,
			"meshid at unix://" + dir + "/none.sock is unreachable: no socket at " + dir + "/none.sock; check that `meshid run` is running and that its socket_path is the one -socket names"},
		{"no socket, from the environment", "unix://" + dir + "/none.sock", FromEnv,
			"no socket at " + dir + "/none.sock; check that `meshid run` is running and that its socket_path is the one $SPIFFE_ENDPOINT_SOCKET names"},
		{"no socket, the default", filepath.Join(dir, "none.sock"), FromDefault,
			"check that `meshid run` is running, and if its socket_path is not /run/meshid/agent.sock, pass -socket or set $SPIFFE_ENDPOINT_SOCKET"},
		{"stale socket", stale, FromFlag, stale + " exists but nothing listens on it (a stale socket of a stopped meshid?)"},
		{"not a socket", notSock, FromFlag, notSock + " is not a socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Parse(tt.value, tt.source)
			if err != nil {
				t.Fatal(err)
			}
			if got := fetch(t, e); !strings.Contains(got, tt.want) {
				t.Fatalf("%q\nlacks %q", got, tt.want)
			}
		})
	}
}

func TestExplainLeavesOtherErrors(t *testing.T) {
	e, err := Parse("/run/meshid/agent.sock", FromFlag)
	if err != nil {
		t.Fatal(err)
	}
	if e.Explain(nil) != nil {
		t.Error("Explain(nil) is an error")
	}
	if got := e.Explain(context.DeadlineExceeded).Error(); got != "meshid at unix:///run/meshid/agent.sock did not answer in time: context deadline exceeded" {
		t.Errorf("deadline: %q", got)
	}
	if got := e.Explain(status.Error(codes.Internal, "boom")).Error(); got != "meshid at unix:///run/meshid/agent.sock: Internal: boom" {
		t.Errorf("other code: %q", got)
	}
}
