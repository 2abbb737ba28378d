package node

import (
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/internal/connlimit"
	"github.com/meshid/meshid/internal/unixsock"
)

// listenAddr opens a listener address from the config: "host:port", or
// "unix:///path" for a Unix socket opened by listenUnix. key is the config
// key, for errors.
func listenAddr(key, addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, config.UnixPrefix); ok {
		return listenUnix(key, path)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return lis, nil
}

// listenUnix opens one of meshid's Unix sockets (the workload socket,
// unix:// authz listeners), which every local process must be able to
// reach; unixsock refuses a directory another uid could tamper with and
// clears a stale socket. key is the config key, for errors.
func listenUnix(key, path string) (net.Listener, error) {
	lis, err := unixsock.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return lis, nil
}

// socketLimits are the workload socket's connection caps, the ext_authz
// listeners' and the file descriptor limit they were derived from.
type socketLimits struct {
	connlimit.Limits
	authz  tcpLimits
	nofile uint64
}

// tcpLimits bound a listener whose callers TCP cannot tell apart: how many
// connections it may hold, and how long one may hold its place unused.
type tcpLimits struct {
	max  int
	idle time.Duration
}

// budgetSockets settles the caps of the limits section, those configured or
// else those derived from the file descriptor limit (raised to its hard
// limit first), so that what callers hold leaves meshid the descriptors for
// its own work (issue 13). It runs with the other inputs: caps the
// descriptors cannot back stop the start before anything is written.
func budgetSockets(l config.Limits, log *slog.Logger) (socketLimits, error) {
	nofile, err := connlimit.RaiseFDLimit()
	switch {
	case err != nil && nofile == 0:
		return socketLimits{}, err
	case err != nil:
		log.Warn("file descriptor limit not raised: connection caps are derived from the lower one", "error", err, "limit", nofile)
	}
	limits, err := connlimit.Budget(nofile, connlimit.Limits{Total: l.Connections, PerUID: l.ConnectionsPerUID})
	if err != nil {
		return socketLimits{}, fmt.Errorf("limits: %w", err)
	}
	authz := tcpLimits{max: connlimit.TCPCap(nofile, l.AuthzConnections), idle: l.IdleTimeout}
	return socketLimits{Limits: limits, authz: authz, nofile: nofile}, nil
}

// listenCapped is listenAddr for a listener that holds at most max
// connections (connlimit.TCPCap says why); at its cap it stops accepting
// until one closes.
func listenCapped(key, addr string, max int) (net.Listener, error) {
	lis, err := listenAddr(key, addr)
	if err != nil {
		return nil, err
	}
	return netutil.LimitListener(lis, max), nil
}

// listenPrivate opens a Unix socket only root and meshid's uid may
// connect to, under the same directory rules. key is the config key.
func listenPrivate(key, path string) (net.Listener, error) {
	lis, err := unixsock.ListenPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return lis, nil
}

// listenAgent opens socket_path behind the caps budgetSockets settled.
func (n *Node) listenAgent(s socketLimits) (net.Listener, error) {
	lis, err := listenUnix("socket_path", n.cfg.SocketPath)
	if err != nil {
		return nil, err
	}
	limited, err := connlimit.NewListener(lis, connlimit.Options{Limits: s.Limits, Log: n.log, Metrics: n.reg})
	if err != nil {
		lis.Close()
		return nil, err
	}
	n.log.Info("connection caps", "connections", s.Total, "connections_per_uid", s.PerUID,
		"authz_connections", s.authz.max, "admin_connections", connlimit.AdminCap, "fd_limit", s.nofile)
	return limited, nil
}

// maxStreamsPerConn bounds the streams one connection may hold open, so a
// caller within its connection cap cannot grow meshid's memory without
// limit through streams instead. An Envoy opens one SDS stream per secret
// it asks for over its connection; 256 is far above any sidecar's count.
const maxStreamsPerConn = 256

// agentServerOptions are the workload socket server's connection options:
// the callers' kernel credentials, read through listenAgent's caps, how
// long a connection may go without its preface or without a stream, and
// how many streams it may hold.
func agentServerOptions(l config.Limits) []grpc.ServerOption {
	return append(connlimit.ServerOptions(attestor.PeerCredentials(), l.HandshakeTimeout, l.IdleTimeout),
		grpc.MaxConcurrentStreams(maxStreamsPerConn))
}
