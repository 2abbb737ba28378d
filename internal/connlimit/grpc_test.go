package connlimit

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// countingCreds are server credentials that record the connection they
// were given and count closes of the one they return.
type countingCreds struct {
	before func() // runs inside the handshake
	got    net.Conn
	closes atomic.Int32
}

func (c *countingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c.got = raw
	if c.before != nil {
		c.before()
	}
	return &countedConn{Conn: raw, closes: &c.closes}, testAuth{}, nil
}

type testAuth struct{ credentials.CommonAuthInfo }

func (testAuth) AuthType() string { return "test" }

func (*countingCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	panic("server side only")
}
func (*countingCreds) Info() credentials.ProtocolInfo            { return credentials.ProtocolInfo{} }
func (c *countingCreds) Clone() credentials.TransportCredentials { return c }
func (*countingCreds) OverrideServerName(string) error           { return nil }

type countedConn struct {
	net.Conn
	closes *atomic.Int32
}

func (c *countedConn) Close() error {
	c.closes.Add(1)
	return c.Conn.Close()
}

// TestHandshakeDeadline: a connection that never sends its HTTP/2 preface
// is closed once the handshake deadline has passed, and gives back its
// place and descriptors; one that does speak is not affected.
func TestHandshakeDeadline(t *testing.T) {
	// Long enough for a -race client on a loaded 2-core machine to finish
	// its own handshake in time; short enough to keep the test quick.
	const deadline = 2 * time.Second
	s := startServer(t, serverOptions{Limits: Limits{Total: 10, PerUID: 10}, handshake: deadline})
	fds := openFDs(t)

	// A gRPC client that completed its handshake stays past the deadline.
	cc, err := grpc.NewClient("unix://"+s.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	c, took, err := dial(s.sock)
	if err != nil || !took {
		t.Fatalf("a silent connection was not taken: %v", err)
	}
	defer c.Close()
	s.waitHeld(t, 2)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, c)
	elapsed := time.Since(start)
	c.Close()
	if err != nil {
		t.Fatalf("silent connection: %v after %s, want it closed by the server", err, elapsed)
	}
	if elapsed < deadline-50*time.Millisecond || elapsed > deadline+3*time.Second {
		t.Errorf("a connection that never sent its preface was closed after %s, want about %s", elapsed, deadline)
	}
	s.waitHeld(t, 1)

	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("the client that spoke in time, after the deadline: %v", err)
	}
	if s.held() != 1 {
		t.Errorf("held = %d, want 1: the client's connection is the one it had", s.held())
	}
	cc.Close()
	s.waitHeld(t, 0)
	waitFDs(t, fds)
}

// TestIdleConnectionsAreClosed: a connection with no stream for the idle
// time is closed; one with an open stream (as SDS and Workload API watches
// are) stays however long it lasts.
func TestIdleConnectionsAreClosed(t *testing.T) {
	const idle = time.Second
	s := startServer(t, serverOptions{Limits: Limits{Total: 10, PerUID: 10}, idle: idle})
	cc, err := grpc.NewClient("unix://"+s.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	health := healthpb.NewHealthClient(cc)

	watch, err := health.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * idle)
	if s.held() != 1 {
		t.Fatalf("held = %d after %s with a stream open, want 1: a watched connection is not idle", s.held(), 3*idle)
	}
	cancel()
	start := time.Now()
	s.waitHeld(t, 0)
	if elapsed := time.Since(start); elapsed < idle-100*time.Millisecond {
		t.Errorf("the connection went %s after its stream ended, want no sooner than the idle time %s", elapsed, idle)
	}
}
