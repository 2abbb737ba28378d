// Package grpctest starts real gRPC servers on real sockets for tests and
// stops them when the test ends. It is test support only.
package grpctest

import (
	"net"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Serve starts a gRPC server with opts on network ("tcp" for a loopback
// port, "unix" for a socket in a temp dir), lets register add services, and
// returns a client connection to it. Both are closed by t.Cleanup, and the
// server's goroutine has ended by then.
func Serve(t testing.TB, network string, register func(*grpc.Server), opts ...grpc.ServerOption) *grpc.ClientConn {
	t.Helper()
	var lis net.Listener
	var target string
	var err error
	switch network {
	case "tcp":
		lis, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			target = lis.Addr().String()
		}
	case "unix":
		path := filepath.Join(t.TempDir(), "grpc.sock")
		lis, err = net.Listen("unix", path)
		target = "unix://" + path
	default:
		t.Fatalf("grpctest: unknown network %q", network)
	}
	if err != nil {
		t.Fatal(err)
	}

	srv := grpc.NewServer(opts...)
	register(srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(lis); err != nil {
			t.Errorf("grpctest: Serve: %v", err)
		}
	}()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		srv.Stop()
		<-done
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-done
	})
	return conn
}
