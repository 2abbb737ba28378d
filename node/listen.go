package node

import (
	"fmt"
	"net"
	"strings"

	"github.com/meshid/meshid/internal/config"
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
