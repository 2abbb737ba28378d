package attestor

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

// callerRecorder is a gRPC server on a real Unix socket that remembers the
// kernel's view of every caller.
type callerRecorder struct {
	mu      sync.Mutex
	callers []Caller
	errs    []error
}

func startRecorder(t *testing.T) (string, *callerRecorder) {
	t.Helper()
	// Not t.TempDir: its parent is 0700, and the re-exec'd child runs as
	// another user that must reach the socket.
	dir, err := os.MkdirTemp("", "meshid-attestor-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	sock := filepath.Join(dir, "s.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(sock, 0o777)
	rec := &callerRecorder{}
	srv := grpc.NewServer(grpc.Creds(PeerCredentials()), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			var err error = ErrNoCaller
			var c Caller
			if p, ok := peer.FromContext(ctx); ok {
				c, err = CallerFromAuthInfo(p.AuthInfo)
			}
			rec.mu.Lock()
			rec.callers, rec.errs = append(rec.callers, c), append(rec.errs, err)
			rec.mu.Unlock()
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return sock, rec
}

func checkHealth(sock string) error {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	return err
}

func TestPeerCredentialsIdentifyTheCallerByTheKernel(t *testing.T) {
	sock, rec := startRecorder(t)
	if err := checkHealth(sock); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := Caller{PID: int32(os.Getpid()), UID: uint32(os.Getuid()), GID: uint32(os.Getgid())}
	if len(rec.callers) != 1 || rec.errs[0] != nil || !sameCreds(rec.callers[0], want) {
		t.Fatalf("recorded %v %v, want %v", rec.callers, rec.errs, want)
	}
}

// TestPeerCredentialsOtherUser runs a child under another uid: the server
// must see that uid and the child's pid, not ours.
func TestPeerCredentialsOtherUser(t *testing.T) {
	if sock := os.Getenv("MESHID_TEST_DIAL"); sock != "" {
		if err := checkHealth(sock); err != nil {
			os.Exit(3)
		}
		os.Exit(0)
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to run a child under another uid")
	}
	sock, rec := startRecorder(t)
	// The test binary sits in a directory only root can enter.
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(filepath.Dir(sock), "attestor.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestPeerCredentialsOtherUser$")
	cmd.Env = append(os.Environ(), "MESHID_TEST_DIAL="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4242, Gid: 4343}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	want := Caller{PID: int32(cmd.Process.Pid), UID: 4242, GID: 4343}
	if len(rec.callers) != 1 || !sameCreds(rec.callers[0], want) {
		t.Fatalf("recorded %v, want %v", rec.callers, want)
	}
}

func TestCallerFromAuthInfoWithoutPeerCredentials(t *testing.T) {
	for name, info := range map[string]credentials.AuthInfo{
		"no AuthInfo":         nil,
		"another transport's": insecureInfo{},
		"a pointer to ours":   &AuthInfo{Caller: Caller{PID: 1}},
	} {
		if c, err := CallerFromAuthInfo(info); err != ErrNoCaller {
			t.Errorf("%s: %v, %v; want ErrNoCaller", name, c, err)
		}
	}
	want := Caller{PID: 7, UID: 1001, GID: 1002}
	if c, err := CallerFromAuthInfo(AuthInfo{Caller: want}); err != nil || !sameCreds(c, want) {
		t.Errorf("PeerCredentials' AuthInfo: %v, %v; want %v", c, err, want)
	}
}

// insecureInfo is an AuthInfo of some other transport credentials.
type insecureInfo struct{ credentials.CommonAuthInfo }

func (insecureInfo) AuthType() string { return "insecure" }

func TestPeerCredentialsRejectNonUnixConnections(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, _, err := PeerCredentials().ServerHandshake(a); err == nil {
		t.Fatal("handshake on a non-Unix connection succeeded")
	}
}

func sameCreds(a, b Caller) bool { return a.PID == b.PID && a.UID == b.UID && a.GID == b.GID }
