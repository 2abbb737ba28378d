package connlimit

import (
	"context"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// ServerOptions are the options of a gRPC server that serves a Listener:
// creds seeing through the Listener's connections (Credentials), a
// deadline of handshake for a new connection to complete the credentials
// handshake and send its HTTP/2 preface and settings, and idle after which
// a connection with no open stream is sent GOAWAY and closed. Without them
// a connection that never speaks, or an idle one, would hold its place for
// good: gRPC allows 120 s for the handshake and never closes an idle
// connection by default.
func ServerOptions(creds credentials.TransportCredentials, handshake, idle time.Duration) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(Credentials(creds)),
		grpc.ConnectionTimeout(handshake),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: idle}),
	}
}

// Credentials gives inner the *net.UnixConn under a Listener's connection,
// as credentials that read the peer's socket options need, and returns a
// connection that still gives its place back when closed. Connections of
// other listeners reach inner unchanged.
func Credentials(inner credentials.TransportCredentials) credentials.TransportCredentials {
	return creds{inner}
}

type creds struct {
	inner credentials.TransportCredentials
}

func (c creds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	lc, ok := raw.(*conn)
	if !ok {
		return c.inner.ServerHandshake(raw)
	}
	// On an error gRPC closes raw, which gives its place back.
	s, info, err := c.inner.ServerHandshake(lc.UnixConn)
	if err != nil {
		return nil, nil, err
	}
	if err := lc.secured(s); err != nil {
		return nil, nil, err
	}
	return &securedConn{Conn: s, c: lc}, info, nil
}

// securedConn is what inner's handshake returned, closed through the
// Listener's connection.
type securedConn struct {
	net.Conn
	c *conn
}

func (s *securedConn) Close() error { return s.c.Close() }

func (c creds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.inner.ClientHandshake(ctx, authority, raw)
}

func (c creds) Info() credentials.ProtocolInfo { return c.inner.Info() }

func (c creds) Clone() credentials.TransportCredentials { return creds{c.inner.Clone()} }

// OverrideServerName is deprecated but still part of the interface.
func (c creds) OverrideServerName(name string) error {
	return c.inner.OverrideServerName(name) //nolint:staticcheck // passed on, not used
}
