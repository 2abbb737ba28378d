package connlimit

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/test/syncbuf"
)

// Two local users who are not root; the tests run as root, a third uid.
const (
	uidA = 12345
	uidB = 12346
)

// prompt is how soon a call must be answered while others are refused:
// a new connection and a health check take milliseconds, and the rest is
// room for a loaded machine running -race.
const prompt = 2 * time.Second

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: connects as other uids")
	}
}

// server is a gRPC health server on a real Unix socket behind a Listener,
// with the attestor's credentials, as meshid serves its workload socket.
type server struct {
	dir  string // root's, 0755: every uid reaches the socket
	sock string
	lis  *Listener
	logs *syncbuf.Buffer
}

type serverOptions struct {
	Limits
	handshake, idle time.Duration
}

func startServer(t *testing.T, o serverOptions) *server {
	t.Helper()
	if o.handshake == 0 {
		o.handshake = time.Minute
	}
	if o.idle == 0 {
		o.idle = time.Hour
	}
	dir, err := os.MkdirTemp("", "connlimit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := &server{dir: dir, sock: filepath.Join(dir, "agent.sock"), logs: &syncbuf.Buffer{}}
	inner, err := net.Listen("unix", s.sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(s.sock, 0o777); err != nil {
		t.Fatal(err)
	}
	s.lis, err = NewListener(inner, Options{
		Limits:  o.Limits,
		Log:     slog.New(slog.NewTextHandler(s.logs, nil)),
		Metrics: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ServerOptions(attestor.PeerCredentials(), o.handshake, o.idle)...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(s.lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return s
}

// held is what the Listener counts now.
func (s *server) held() int { return s.lis.heldMetric() }

func (s *server) refused(reason string) int {
	var m dto.Metric
	if err := s.lis.metrics.refused.WithLabelValues(reason).Write(&m); err != nil {
		panic(err)
	}
	return int(m.GetCounter().GetValue())
}

// heldMetric is the value of meshid_socket_connections.
func (l *Listener) heldMetric() int {
	var m dto.Metric
	if err := l.metrics.held.Write(&m); err != nil {
		panic(err)
	}
	return int(m.GetGauge().GetValue())
}

// waitHeld waits for the count to settle at want: closes are seen by the
// server a moment after the client makes them.
func (s *server) waitHeld(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.held() != want {
		if time.Now().After(deadline) {
			t.Fatalf("server holds %d connections, want %d", s.held(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// healthCheck makes one gRPC call on a new connection and returns how long
// it took, connection included.
func (s *server) healthCheck(t *testing.T, timeout time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	cc, err := grpc.NewClient("unix://"+s.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return time.Since(start), err
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return time.Since(start), fmt.Errorf("health status %s", resp.Status)
	}
	return time.Since(start), nil
}

// hold starts a copy of this test binary as uid that opens n connections
// (and floods, if asked) and returns it with its accepted/refused report.
func (s *server) hold(t *testing.T, uid uint32, n int, flood bool) (*child, string) {
	t.Helper()
	bin := filepath.Join(s.dir, "connlimit.test")
	if _, err := os.Stat(bin); err != nil {
		copyExecutable(t, bin)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{childMode + "=hold", childSock + "=" + s.sock, fmt.Sprintf("%s=%d", childN, n)}
	if flood {
		cmd.Env = append(cmd.Env, childFlood+"=1")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{stdin: stdin, out: bufio.NewReader(stdout), wait: cmd.Wait}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return c, c.readLine(t)
}

func copyExecutable(t *testing.T, dst string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// openFDs counts this process's file descriptors: connections must give
// back their socket and pidfd.
func openFDs(t *testing.T) int {
	t.Helper()
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(des)
}

func waitFDs(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for openFDs(t) > want {
		if time.Now().After(deadline) {
			t.Fatalf("%d file descriptors open, want %d as before the connections", openFDs(t), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPerUIDCap: a uid that asks for more than its share gets exactly its
// share, the rest are closed at once, and another uid still connects and
// is answered; each uid's share is its own, and closing gives it back.
func TestPerUIDCap(t *testing.T) {
	requireRoot(t)
	s := startServer(t, serverOptions{Limits: Limits{Total: 50, PerUID: 3}})

	a, got := s.hold(t, uidA, 5, false)
	if got != "accepted=3 refused=2" {
		t.Fatalf("uid %d asking for 5 connections with a share of 3: %s, want accepted=3 refused=2", uidA, got)
	}
	if took, err := s.healthCheck(t, 5*time.Second); err != nil || took > prompt {
		t.Fatalf("root's health check while uid %d holds its share: %v after %s, want an answer within %s", uidA, err, took, prompt)
	}
	b, got := s.hold(t, uidB, 3, false)
	if got != "accepted=3 refused=0" {
		t.Fatalf("uid %d asking for its 3: %s, want all accepted: uid %d's share is not uid %d's", uidB, got, uidA, uidB)
	}
	s.waitHeld(t, 6)
	if got := s.refused(reasonPerUID); got != 2 {
		t.Errorf("refused{per_uid} = %d, want 2", got)
	}
	if got := s.refused(reasonTotal); got != 0 {
		t.Errorf("refused{total} = %d, want 0", got)
	}
	lines := s.logs.Lines("connection refused")
	if len(lines) != 1 || !strings.Contains(lines[0], "reason=per_uid uid=12345") || !strings.Contains(lines[0], "held=3 limit=3") {
		t.Errorf("refusal log = %q, want one line for uid 12345 at 3 of 3", lines)
	}

	a.stop(t)
	s.waitHeld(t, 3)
	if _, got := s.hold(t, uidA, 3, false); got != "accepted=3 refused=0" {
		t.Errorf("uid %d after closing its connections: %s, want its share back", uidA, got)
	}
	b.stop(t)
	s.waitHeld(t, 3)
}

// TestPerUIDCapGivesBackEveryFD: refused and closed connections leave no
// descriptor behind in the server.
func TestPerUIDCapGivesBackEveryFD(t *testing.T) {
	requireRoot(t)
	s := startServer(t, serverOptions{Limits: Limits{Total: 50, PerUID: 5}})
	fds := openFDs(t)
	a, got := s.hold(t, uidA, 20, false)
	if got != "accepted=5 refused=15" {
		t.Fatalf("got %s, want accepted=5 refused=15", got)
	}
	// A socket and a pidfd for each connection held.
	if n := openFDs(t) - fds; n < 5*FDsPerConn {
		t.Errorf("%d more descriptors while 5 connections are held, want at least %d: is the count of FDsPerConn right?", n, 5*FDsPerConn)
	}
	a.stop(t)
	s.waitHeld(t, 0)
	waitFDs(t, fds)
}

// TestFloodFromOneUIDDoesNotHoldUpOthers: while one uid holds its share and
// keeps connecting as fast as it is refused, another's calls are answered
// promptly, and the log says so once, not once per refusal.
func TestFloodFromOneUIDDoesNotHoldUpOthers(t *testing.T) {
	requireRoot(t)
	s := startServer(t, serverOptions{Limits: Limits{Total: 50, PerUID: 4}})
	a, got := s.hold(t, uidA, 4, true)
	if got != "accepted=4 refused=0" {
		t.Fatalf("got %s, want accepted=4 refused=0", got)
	}
	flooding := time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for s.refused(reasonPerUID) < 500 {
		if time.Now().After(deadline) {
			t.Fatalf("the flood got only %d refusals in 10s", s.refused(reasonPerUID))
		}
		time.Sleep(10 * time.Millisecond)
	}
	var slowest time.Duration
	for range 20 {
		took, err := s.healthCheck(t, 5*time.Second)
		if err != nil {
			t.Fatalf("health check during the flood: %v after %s", err, took)
		}
		slowest = max(slowest, took)
	}
	during := s.refused(reasonPerUID)
	report := a.stop(t)
	t.Logf("slowest of 20 health checks during the flood: %s; %d refusals (%s)", slowest, during, report)
	if slowest > prompt {
		t.Errorf("slowest health check took %s during the flood, want under %s", slowest, prompt)
	}
	// One line per logEvery, however many refusals.
	if lines, most := s.logs.Lines("connection refused"), 1+int(time.Since(flooding)/logEvery); len(lines) < 1 || len(lines) > most {
		t.Errorf("%d refusal log lines for %d refusals, want 1 to %d", len(lines), during, most)
	}
	s.waitHeld(t, 0)
}

// TestTotalCap: when all callers together hold Total connections, the next
// is refused whatever its uid's share, root's included, until one closes.
func TestTotalCap(t *testing.T) {
	requireRoot(t)
	s := startServer(t, serverOptions{Limits: Limits{Total: 4, PerUID: 3}})
	a, got := s.hold(t, uidA, 3, false)
	if got != "accepted=3 refused=0" {
		t.Fatalf("uid %d: %s, want accepted=3", uidA, got)
	}
	b, got := s.hold(t, uidB, 3, false)
	if got != "accepted=1 refused=2" {
		t.Fatalf("uid %d with room for one more in all: %s, want accepted=1 refused=2", uidB, got)
	}
	if got := s.refused(reasonTotal); got != 2 {
		t.Errorf("refused{total} = %d, want 2", got)
	}
	if _, err := s.healthCheck(t, 300*time.Millisecond); err == nil {
		t.Error("root's health check succeeded on a full socket: root must count against the total")
	}
	if lines := s.logs.Lines("reason=total"); len(lines) != 1 || !strings.Contains(lines[0], "held=4 limit=4") {
		t.Errorf("refusal log = %q, want one line at 4 of 4", lines)
	}
	a.stop(t)
	s.waitHeld(t, 1)
	if took, err := s.healthCheck(t, 5*time.Second); err != nil {
		t.Errorf("health check once uid %d closed its connections: %v after %s", uidA, err, took)
	}
	b.stop(t)
	s.waitHeld(t, 0)
}

// TestRootHasAShareLikeAnyUID: uid 0 gets no exemption from the per-uid cap
// (see Limits.PerUID).
func TestRootHasAShareLikeAnyUID(t *testing.T) {
	s := startServer(t, serverOptions{Limits: Limits{Total: 10, PerUID: 2}})
	var kept []net.Conn
	defer func() {
		for _, c := range kept {
			c.Close()
		}
	}()
	var took []bool
	for range 3 {
		c, ok, err := dial(s.sock)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			kept = append(kept, c)
		}
		took = append(took, ok)
	}
	if fmt.Sprint(took) != "[true true false]" {
		t.Errorf("uid %d's connections taken: %v, want [true true false]", os.Geteuid(), took)
	}
}

// acceptAll accepts from l until it is closed, sending each connection.
func acceptAll(t *testing.T, l *Listener) <-chan net.Conn {
	t.Helper()
	conns := make(chan net.Conn, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(conns)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for c := range conns {
			c.Close()
		}
	})
	return conns
}

func newListener(t *testing.T, limits Limits) (*Listener, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	inner, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewListener(inner, Options{Limits: limits})
	if err != nil {
		inner.Close()
		t.Fatal(err)
	}
	return l, sock
}

func mustDial(t *testing.T, sock string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestReleaseExactlyOnce: a connection's place is given back when it is
// closed, once however often it is closed and through whichever wrapper,
// and the next caller gets it.
func TestReleaseExactlyOnce(t *testing.T) {
	l, sock := newListener(t, Limits{Total: 2, PerUID: 2})
	conns := acceptAll(t, l)
	mustDial(t, sock)
	mustDial(t, sock)
	first, second := <-conns, <-conns
	held := l.heldMetric
	if held() != 2 {
		t.Fatalf("held = %d after two accepts, want 2", held())
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err == nil {
		t.Error("a second Close returned nil, want net.ErrClosed")
	}
	if held() != 1 {
		t.Fatalf("held = %d after closing one connection twice, want 1", held())
	}

	// Through the credentials: closing what the handshake returned and
	// then the raw connection, as gRPC does on a failed preface.
	inner := &countingCreds{}
	secured, _, err := Credentials(inner).ServerHandshake(second)
	if err != nil {
		t.Fatal(err)
	}
	if inner.got != second.(*conn).UnixConn {
		t.Errorf("inner credentials got a %T, want the *net.UnixConn itself", inner.got)
	}
	secured.Close()
	second.Close()
	if held() != 0 || inner.closes.Load() != 1 {
		t.Errorf("after closing both wrappers: held = %d, inner conn closed %d times; want 0 and 1", held(), inner.closes.Load())
	}

	mustDial(t, sock)
	select {
	case c := <-conns:
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted after both places were given back")
	}
}

// TestCloseDuringHandshake: a connection closed while its credentials are
// being read closes what the handshake then returns (the attestor's pidfd)
// and fails the handshake.
func TestCloseDuringHandshake(t *testing.T) {
	l, sock := newListener(t, Limits{Total: 1, PerUID: 1})
	conns := acceptAll(t, l)
	mustDial(t, sock)
	c := <-conns
	inner := &countingCreds{before: func() { c.Close() }}
	if _, _, err := Credentials(inner).ServerHandshake(c); err == nil {
		t.Error("handshake of a connection closed meanwhile succeeded")
	}
	if inner.closes.Load() != 1 {
		t.Errorf("what the handshake returned was closed %d times, want 1", inner.closes.Load())
	}
	if held := l.heldMetric(); held != 0 {
		t.Errorf("held = %d, want 0", held)
	}
}

func TestNewListenerRefusesZeroLimits(t *testing.T) {
	for _, limits := range []Limits{{Total: 0, PerUID: 1}, {Total: 1, PerUID: 0}, {Total: -1, PerUID: 1}} {
		if _, err := NewListener(nil, Options{Limits: limits}); err == nil {
			t.Errorf("NewListener with %+v succeeded", limits)
		}
	}
}

func TestAcceptRefusesOtherSockets(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := NewListener(inner, Options{Limits: Limits{Total: 1, PerUID: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := l.Accept(); err == nil || !strings.Contains(err.Error(), "is not a Unix socket listener") {
		t.Errorf("Accept on TCP = %v, want an error: peer credentials need a Unix socket", err)
	}
}
