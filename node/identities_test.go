package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/sds"
	"github.com/meshid/meshid/workload"
)

// The uids of the test's two children: the caller an entry names, and the
// process it passes its connection to.
const (
	callerUID = 4242
	holderUID = 4343
	callerID  = "spiffe://example.org/caller"
)

// streamCall is one kind of stream a caller opens on the agent socket:
// open asks for the caller's SVID and returns once the first one arrived.
type streamCall struct {
	name, method string
	open         func(ctx context.Context, conn *grpc.ClientConn) error
}

var streamCalls = []streamCall{
	{"SDS state of the world", "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets", func(ctx context.Context, conn *grpc.ClientConn) error {
		s, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
		if err != nil {
			return err
		}
		if err := s.Send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{callerID}}); err != nil {
			return err
		}
		resp, err := s.Recv()
		if err == nil && len(resp.Resources) != 1 {
			err = fmt.Errorf("%d secrets, want the SVID", len(resp.Resources))
		}
		return err
	}},
	{"SDS delta", "/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets", func(ctx context.Context, conn *grpc.ClientConn) error {
		s, err := secretv3.NewSecretDiscoveryServiceClient(conn).DeltaSecrets(ctx)
		if err != nil {
			return err
		}
		if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{callerID}}); err != nil {
			return err
		}
		resp, err := s.Recv()
		if err == nil && len(resp.Resources) != 1 {
			err = fmt.Errorf("%d secrets, want the SVID", len(resp.Resources))
		}
		return err
	}},
	{"Workload API FetchX509SVID", "/SpiffeWorkloadAPI/FetchX509SVID", func(ctx context.Context, conn *grpc.ClientConn) error {
		ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
		s, err := workloadpb.NewSpiffeWorkloadAPIClient(conn).FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
		if err != nil {
			return err
		}
		resp, err := s.Recv()
		if err == nil && (len(resp.Svids) != 1 || len(resp.Svids[0].X509SvidKey) == 0) {
			err = fmt.Errorf("%d SVIDs, want the caller's with its key", len(resp.Svids))
		}
		return err
	}},
}

// TestStreamsEndWithTheirProcess is the attack of issue 13: a process an
// entry names opens a stream, passes the connected socket to a process of
// another uid over SCM_RIGHTS, and exits. The stream must end then
// (Unavailable) and the new holder must get nothing more, not even the
// renewed SVID. Real socket, real processes, the real attestor, identity
// manager, CA, SDS and Workload API servers, wired as the node wires them.
func TestStreamsEndWithTheirProcess(t *testing.T) {
	switch os.Getenv("MESHID_NODE_TEST_ROLE") {
	case "caller":
		passOn(os.Getenv("MESHID_NODE_TEST_SOCK"), os.Getenv("MESHID_NODE_TEST_CALL"))
	case "holder":
		hold()
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to run processes under other uids")
	}
	a := startAgent(t)
	for _, call := range streamCalls {
		t.Run(call.name, func(t *testing.T) {
			pairA, pairB := socketPair(t)
			holder := a.child(t, "holder", holderUID, pairB, nil)
			holderIn, _ := holder.StdinPipe()
			holderOut, _ := holder.StdoutPipe()
			var callerOut strings.Builder
			caller := a.child(t, "caller", callerUID, pairA, &callerOut, "MESHID_NODE_TEST_CALL="+call.name)
			if err := holder.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
			frames := lines(holderOut)
			a.drainMints()
			if err := caller.Run(); err != nil {
				t.Fatalf("caller: %v\n%s", err, callerOut.String())
			}
			exited := time.Now()
			pairA.Close()
			pairB.Close()
			expect(t, frames, "holding")
			io.WriteString(holderIn, "read\n") // only the holder reads the socket now

			select {
			case end := <-a.ended:
				if end.method != call.method || status.Code(end.err) != codes.Unavailable || !strings.Contains(end.err.Error(), "attested process exited") {
					t.Fatalf("%s ended with %v, want %s to end Unavailable, the attested process exited", end.method, end.err, call.method)
				}
				t.Logf("stream ended %v after the caller's exit was reaped", end.at.Sub(exited))
			case <-time.After(5 * time.Second):
				t.Fatal("the stream did not end within 5s of its caller's exit")
			}
			expect(t, frames, "frame HEADERS stream=1 end_stream=true") // the trailers, on the wire the holder reads

			a.clock.Add(45 * time.Minute) // past the SVID's renewal time (1h TTL)
			select {
			case svid := <-a.minted:
				t.Logf("renewed %s, serial %x", svid.ID, svid.Certificates[0].SerialNumber)
			case <-time.After(5 * time.Second):
				t.Fatal("the SVID was not renewed")
			}
			// The push of the renewal, were it made, takes milliseconds.
			time.Sleep(300 * time.Millisecond)
			holderIn.Close()
			for line := range frames {
				if strings.HasPrefix(line, "frame DATA") {
					t.Errorf("the socket's new holder received %q after the caller exited", line)
				}
			}
		})
	}
}

// agent is the agent socket's gRPC server as the node builds it, with a
// CA and identity manager on a clock the test moves.
type agent struct {
	dir, sock, bin string
	clock          *testClock
	minted         chan *x509svid.SVID
	ended          chan streamEnd
}

type streamEnd struct {
	method string
	err    error
	at     time.Time
}

func startAgent(t *testing.T) *agent {
	t.Helper()
	// Not t.TempDir: its parent is 0700, and the children run as other
	// users that must reach the socket and their own binary.
	dir, err := os.MkdirTemp("", "meshid-node-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{dir: dir, sock: filepath.Join(dir, "agent.sock"), bin: filepath.Join(dir, "node.test"),
		clock: &testClock{now: time.Now()}, minted: make(chan *x509svid.SVID, 16), ended: make(chan streamEnd, 16)}
	if err := os.WriteFile(a.bin, self, 0o755); err != nil {
		t.Fatal(err)
	}

	td := spiffeid.RequireTrustDomainFromString("example.org")
	authority, err := ca.Open(ca.Options{TrustDomain: td, Dir: t.TempDir(), TTL: 24 * time.Hour, Clock: a.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	att, err := attestor.New(attestor.Options{})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := identity.ParseEntries("entries.yaml", fmt.Appendf(nil, "entries:\n  - spiffe_id: %s\n    selectors: [\"unix:uid:%d\"]\n", callerID, callerUID), td)
	if err != nil {
		t.Fatal(err)
	}
	m := identity.NewManager(identity.Options{Entries: entries, DefaultTTL: time.Hour, DefaultJWTTTL: 5 * time.Minute,
		Minter: recordingMinter{authority, a.minted}, Attestor: att, Clock: a.clock.Now, Jitter: func() float64 { return 0 }})

	srv := grpc.NewServer(grpc.Creds(attestor.PeerCredentials()), grpc.StreamInterceptor(
		func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			err := handler(srv, ss)
			a.ended <- streamEnd{info.FullMethod, err, time.Now()}
			return err
		}))
	sds.New(sds.Options{Identities: sdsIdentities{m}}).Register(srv)
	workload.New(workload.Options{Identities: workloadIdentities{m}}).Register(srv)
	lis, err := net.Listen("unix", a.sock)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(a.sock, 0o777)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(lis) })
	wg.Go(func() { m.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		srv.Stop()
		wg.Wait()
	})
	return a
}

// child is the test binary in one of its roles, as uid, with pair as fd 3.
func (a *agent) child(t *testing.T, role string, uid uint32, pair *os.File, out io.Writer, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(a.bin, "-test.run=^TestStreamsEndWithTheirProcess$")
	cmd.Env = append(os.Environ(), append(env, "MESHID_NODE_TEST_ROLE="+role, "MESHID_NODE_TEST_SOCK="+a.sock)...)
	cmd.ExtraFiles = []*os.File{pair}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	return cmd
}

// drainMints forgets the SVIDs minted so far.
func (a *agent) drainMints() {
	for {
		select {
		case <-a.minted:
		default:
			return
		}
	}
}

// recordingMinter is the CA, telling the test of every X509-SVID minted.
type recordingMinter struct {
	*ca.Authority
	minted chan<- *x509svid.SVID
}

func (r recordingMinter) MintX509SVID(req ca.SVIDRequest) (*x509svid.SVID, error) {
	svid, err := r.Authority.MintX509SVID(req)
	if err == nil {
		select {
		case r.minted <- svid:
		default: // more than the test waits for
		}
	}
	return svid, err
}

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func socketPair(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "pair a"), os.NewFile(uintptr(fds[1]), "pair b")
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// lines delivers r's lines until it ends.
func lines(r io.Reader) <-chan string {
	out := make(chan string, 64)
	go func() {
		defer close(out)
		s := bufio.NewScanner(r)
		for s.Scan() {
			out <- s.Text()
		}
	}()
	return out
}

// expect waits for a line starting with want, failing on any other line
// but HTTP/2's bookkeeping frames.
func expect(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			switch {
			case !ok:
				t.Fatalf("the holder ended without saying %q", want)
			case strings.HasPrefix(line, want):
				return
			case strings.HasPrefix(line, "frame ") && !strings.HasPrefix(line, "frame DATA"):
				// PING, WINDOW_UPDATE, RST_STREAM and the like carry nothing
			default:
				t.Fatalf("the holder said %q, want %q", line, want)
			}
		case <-timeout:
			t.Fatalf("the holder did not say %q within 5s", want)
		}
	}
}

// passOn is the caller: it opens the stream named call, and once its SVID
// arrived passes the connection to the holder (fd 3) and exits.
func passOn(sock, callName string) {
	fail := func(err error) {
		fmt.Println(err)
		os.Exit(3)
	}
	dialed := make(chan *net.UnixConn, 1)
	conn, err := grpc.NewClient("passthrough:///agent", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "unix", sock)
			if err == nil {
				dialed <- c.(*net.UnixConn)
			}
			return c, err
		}))
	if err != nil {
		fail(err)
	}
	var call *streamCall
	for i := range streamCalls {
		if streamCalls[i].name == callName {
			call = &streamCalls[i]
		}
	}
	if call == nil {
		fail(fmt.Errorf("no call %q", callName))
	}
	if err := call.open(context.Background(), conn); err != nil {
		fail(fmt.Errorf("%s: %w", callName, err))
	}
	raw, err := (<-dialed).SyscallConn()
	if err != nil {
		fail(err)
	}
	pair := os.NewFile(3, "pair")
	var sendErr error
	if err := raw.Control(func(fd uintptr) {
		sendErr = unix.Sendmsg(int(pair.Fd()), []byte{'c'}, unix.UnixRights(int(fd)), nil, 0)
	}); err != nil || sendErr != nil {
		fail(fmt.Errorf("pass the connection on: %v %v", err, sendErr))
	}
	if _, err := pair.Read(make([]byte, 1)); err != nil { // the holder has it
		fail(err)
	}
	os.Exit(0) // the stream, its gRPC connection and all
}

// hold is the socket's new holder: it takes the connection the caller
// passes on (fd 3) and, once told to on stdin, reads it, printing each
// HTTP/2 frame meshid sends, until stdin ends.
func hold() {
	pair := os.NewFile(3, "pair")
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(pair.Fd()), make([]byte, 1), oob, 0)
	if err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		fmt.Println("no control message", err)
		os.Exit(3)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		fmt.Println("no fd", err)
		os.Exit(3)
	}
	conn := os.NewFile(uintptr(fds[0]), "passed on")
	pair.Write([]byte{'h'})
	fmt.Println("holding")
	in := bufio.NewReader(os.Stdin)
	in.ReadString('\n')
	go func() {
		names := []string{"DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING", "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"}
		hdr := make([]byte, 9)
		for {
			if _, err := io.ReadFull(conn, hdr); err != nil {
				fmt.Println("read:", err)
				return
			}
			length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
			name := fmt.Sprintf("type%d", hdr[3])
			if int(hdr[3]) < len(names) {
				name = names[hdr[3]]
			}
			endStream := (hdr[3] == 0 || hdr[3] == 1) && hdr[4]&1 != 0
			fmt.Printf("frame %s stream=%d end_stream=%v len=%d\n", name, binary.BigEndian.Uint32(hdr[5:])&0x7fffffff, endStream, length)
			if _, err := io.CopyN(io.Discard, conn, int64(length)); err != nil {
				fmt.Println("read:", err)
				return
			}
		}
	}()
	io.Copy(io.Discard, in)
	os.Exit(0)
}
