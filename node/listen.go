package node

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/meshid/meshid/internal/config"
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

// listenUnix opens one of meshid's Unix sockets (the workload socket, unix://
// authz listeners), which every local process must be able to reach: parent
// directory 0755 when meshid creates it, socket 0777. Who may do what is
// decided per caller from its kernel credentials, not by file permissions.
func listenUnix(key, path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("%s: %w", key, err)
		}
		if err := os.Chmod(dir, 0o755); err != nil { // MkdirAll is subject to umask
			return nil, fmt.Errorf("%s: %w", key, err)
		}
	}
	if err := removeStaleSocket(key, path); err != nil {
		return nil, err
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	if err := os.Chmod(path, 0o777); err != nil {
		lis.Close()
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return lis, nil
}

// removeStaleSocket clears a socket left by a meshid that died, but never
// steals one that is still served, and never deletes a non-socket file.
func removeStaleSocket(key, path string) error {
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if info.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s: %s exists and is not a socket; move it away", key, path)
	}
	if conn, err := net.Dial("unix", path); err == nil {
		conn.Close()
		return fmt.Errorf("%s: %s is in use: is another meshid running?", key, path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("%s: remove stale socket: %w", key, err)
	}
	return nil
}
