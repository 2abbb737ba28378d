package node

import (
	"fmt"
	"net"
	"strings"

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

// listenAgent opens socket_path behind the caps of the limits section, those
// configured or else those derived from the file descriptor limit (raised
// to its hard limit first), so that what callers hold leaves meshid the
// descriptors for its own work (issue 13). Caps the descriptors cannot back
// stop the start before the socket exists.
func (n *Node) listenAgent() (net.Listener, error) {
	nofile, err := connlimit.RaiseFDLimit()
	switch {
	case err != nil && nofile == 0:
		return nil, err
	case err != nil:
		n.log.Warn("file descriptor limit not raised: connection caps are derived from the lower one", "error", err, "limit", nofile)
	}
	limits, err := connlimit.Budget(nofile, connlimit.Limits{Total: n.cfg.Limits.Connections, PerUID: n.cfg.Limits.ConnectionsPerUID})
	if err != nil {
		return nil, fmt.Errorf("limits: %w", err)
	}
	lis, err := listenUnix("socket_path", n.cfg.SocketPath)
	if err != nil {
		return nil, err
	}
	limited, err := connlimit.NewListener(lis, connlimit.Options{Limits: limits, Log: n.log, Metrics: n.reg})
	if err != nil {
		lis.Close()
		return nil, err
	}
	n.log.Info("workload socket connection caps", "connections", limits.Total, "connections_per_uid", limits.PerUID, "fd_limit", nofile)
	return limited, nil
}

// agentServerOptions are the workload socket server's connection options:
// the callers' kernel credentials, read through listenAgent's caps, and how
// long a connection may go without its preface or without a stream.
func agentServerOptions(l config.Limits) []grpc.ServerOption {
	return connlimit.ServerOptions(attestor.PeerCredentials(), l.HandshakeTimeout, l.IdleTimeout)
}
