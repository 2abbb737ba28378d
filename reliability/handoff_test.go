//go:build reliability

package reliability

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/test/harness"
)

// TestStreamsEndWithTheirCaller is finding 4 of issue 13: a workload (the
// backend Envoy's uid) connects to meshid and hands the connection to
// another process, here this test, then exits. The streams opened on that
// connection were served while the attested process lived (SDS and the
// Workload API), and must end with Unavailable once it has exited, sending
// nothing after; a new call on the connection is refused. Whoever holds
// the connection then was never attested.
func TestStreamsEndWithTheirCaller(t *testing.T) {
	const maxEnd = 5 * time.Second
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: harness.DemoEntries()})
	if err != nil {
		t.Fatal(err)
	}

	// The connection, attested as the connector, arrives here.
	ctlPath := filepath.Join(env.Dir, "handoff.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: ctlPath, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.Chmod(ctlPath, 0o777); err != nil {
		t.Fatal(err)
	}
	connector := startLoadgen(t, ctx, env, "handoff", harness.BackendEnvoyUID, "handoff", "-socket", m.SocketPath, "-to", ctlPath)
	ln.SetDeadline(time.Now().Add(30 * time.Second))
	ctl, err := ln.AcceptUnix()
	if err != nil {
		t.Fatalf("the connector never called: %v\n%s", err, connector.LogTail(5))
	}
	defer ctl.Close()
	conn, err := receiveConn(ctl)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cc, err := grpc.NewClient("passthrough:///handed-over",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dialOnce(conn)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	// While the connector lives, its identity is served on its connection.
	streamCtx, endStreams := context.WithCancel(ctx)
	defer endStreams()
	sdsStream, err := secretv3.NewSecretDiscoveryServiceClient(cc).StreamSecrets(streamCtx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sdsStream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{harness.BackendID}}); err != nil {
		t.Fatal(err)
	}
	if resp, err := sdsStream.Recv(); err != nil || len(resp.Resources) != 1 {
		t.Fatalf("SDS on the handed-over connection while its process lives: %v", err)
	}
	wlCtx := metadata.AppendToOutgoingContext(streamCtx, "workload.spiffe.io", "true")
	wlStream, err := workload.NewSpiffeWorkloadAPIClient(cc).FetchX509SVID(wlCtx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := wlStream.Recv(); err != nil || len(resp.Svids) != 1 || resp.Svids[0].SpiffeId != harness.BackendID {
		t.Fatalf("Workload API on the handed-over connection while its process lives: %v %v", resp, err)
	}

	// The connector exits; both streams must end, and nothing more come.
	ctl.Close()
	if err := connector.Wait(); err != nil {
		t.Fatalf("connector: %v\n%s", err, connector.LogTail(5))
	}
	exited := time.Now()
	type end struct {
		api  string
		err  error
		took time.Duration
	}
	ends := make(chan end, 2)
	go func() {
		resp, err := sdsStream.Recv()
		if err == nil {
			err = fmt.Errorf("a response after the caller exited: version %s, %d resources", resp.VersionInfo, len(resp.Resources))
		}
		ends <- end{"SDS", err, time.Since(exited)}
	}()
	go func() {
		resp, err := wlStream.Recv()
		if err == nil {
			err = fmt.Errorf("a response after the caller exited: %d SVIDs", len(resp.Svids))
		}
		ends <- end{"Workload API", err, time.Since(exited)}
	}()
	var slowest time.Duration
	for range 2 {
		select {
		case e := <-ends:
			if status.Code(e.err) != codes.Unavailable {
				t.Errorf("%s stream after its caller exited: %v, want Unavailable", e.api, e.err)
			}
			t.Logf("%s stream ended %v after the caller exited: %v", e.api, round(e.took), e.err)
			slowest = max(slowest, e.took)
		case <-time.After(maxEnd):
			t.Fatalf("a stream still open %v after its caller exited", maxEnd)
		}
	}
	_, err = secretv3.NewSecretDiscoveryServiceClient(cc).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{harness.BackendID}})
	if err == nil {
		t.Error("FetchSecrets on the connection of an exited caller answered")
	}
	t.Logf("a new FetchSecrets on it: %v", err)
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "exited") {
		t.Errorf("FetchSecrets refused with %q, want it to say the attested process exited", msg)
	}
	report(t, "a connection handed to another process: its SDS and Workload API streams end with Unavailable once the attested process exits, nothing sent after, new calls refused",
		"both streams ended within %v of the exit (bound %v)", round(slowest), maxEnd)
}

// receiveConn takes the connection passed over ctl with SCM_RIGHTS.
func receiveConn(ctl *net.UnixConn) (net.Conn, error) {
	ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf, oob := make([]byte, 16), make([]byte, syscall.CmsgSpace(4))
	_, oobn, _, _, err := ctl.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("receive the connection: %w", err)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("receive the connection: %d control messages, %v", len(msgs), err)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("receive the connection: %d descriptors, %v", len(fds), err)
	}
	f := os.NewFile(uintptr(fds[0]), "meshid-conn")
	defer f.Close()
	return net.FileConn(f)
}

// dialOnce is a gRPC dialer that returns conn the first time and fails
// after: the test's calls must all travel on the connection handed over.
func dialOnce(conn net.Conn) func(context.Context, string) (net.Conn, error) {
	used := false
	return func(context.Context, string) (net.Conn, error) {
		if used {
			return nil, errors.New("the handed-over connection is gone")
		}
		used = true
		return conn, nil
	}
}
