package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
)

// listenWorkloadSocket opens the workload socket every local process must be
// able to reach: parent directory 0755 when meshid creates it, socket 0777.
// Who may do what is decided per caller from its kernel credentials, not by
// file permissions.
func listenWorkloadSocket(path string) (net.Listener, error) {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("socket_path: %w", err)
		}
		if err := os.Chmod(dir, 0o755); err != nil { // MkdirAll is subject to umask
			return nil, fmt.Errorf("socket_path: %w", err)
		}
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("socket_path: %w", err)
	}
	if err := os.Chmod(path, 0o777); err != nil {
		lis.Close()
		return nil, fmt.Errorf("socket_path: %w", err)
	}
	return lis, nil
}

// removeStaleSocket clears a socket left by a meshid that died, but never
// steals one that is still served, and never deletes a non-socket file.
func removeStaleSocket(path string) error {
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("socket_path: %w", err)
	}
	if info.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("socket_path %s exists and is not a socket; move it away", path)
	}
	if conn, err := net.Dial("unix", path); err == nil {
		conn.Close()
		return fmt.Errorf("socket_path %s is in use: is another meshid running?", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("socket_path: remove stale socket: %w", err)
	}
	return nil
}
