package attestor

import (
	"context"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
)

// Caller is the kernel's account of the process on the other end of a Unix
// socket, taken with SO_PEERCRED when the connection was accepted. Nothing
// the caller sends can change it.
type Caller struct {
	PID int32
	UID uint32
	GID uint32

	// proc is the handle on the process taken at accept, closed with the
	// connection; procErr says why there is none. A Caller made by hand
	// has neither and is looked up by pid when attested.
	proc    *Process
	procErr error
}

// Exited returns a channel that is closed once the caller's process has
// exited, as the handle taken at accept sees it. Whatever serves the
// caller, a stream above all, must stop then: whoever holds the connection
// afterwards (a process the socket was passed to) is not the process the
// kernel named. A Caller without a handle (made by hand, or whose process
// was gone at accept and so is never attested) returns nil, which is never
// closed.
func (c Caller) Exited() <-chan struct{} {
	if c.proc == nil {
		return nil
	}
	return c.proc.Exited()
}

// AuthInfo carries the Caller through gRPC's peer information.
type AuthInfo struct {
	credentials.CommonAuthInfo
	Caller Caller
}

// AuthType implements credentials.AuthInfo.
func (AuthInfo) AuthType() string { return "meshid-peercred" }

// ErrNoCaller means a request did not arrive over a connection accepted by
// PeerCredentials: without the kernel's word we know nothing about it.
var ErrNoCaller = errors.New("caller unknown: the connection did not come through the workload socket")

// CallerFromAuthInfo returns the kernel's view of a gRPC caller from its
// peer's AuthInfo, which PeerCredentials recorded at accept.
func CallerFromAuthInfo(info credentials.AuthInfo) (Caller, error) {
	ai, ok := info.(AuthInfo)
	if !ok {
		return Caller{}, ErrNoCaller
	}
	return ai.Caller, nil
}

// PeerCredentials returns gRPC transport credentials for a Unix socket
// server that record each connection's SO_PEERCRED, so handlers can learn
// who called from the kernel rather than from the request.
func PeerCredentials() credentials.TransportCredentials { return peerCreds{} }

type peerCreds struct{}

func (peerCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return nil, nil, fmt.Errorf("peer credentials need a Unix socket, got %T", conn)
	}
	caller, pidfd, err := readPeerCred(uc)
	if err != nil {
		return nil, nil, err
	}
	// Taken now, before the caller can exit and its pid be reused. A
	// process already gone still gets its connection: its attestation
	// fails with the reason, which is logged and counted.
	caller.proc, caller.procErr = openProcess(defaultProcDir, caller, pidfd)
	if caller.proc != nil {
		conn = &trackedConn{Conn: conn, proc: caller.proc}
	}
	return conn, AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		Caller:         caller,
	}, nil
}

// readPeerCred returns the kernel's credentials of the peer and, where the
// kernel has SO_PEERPIDFD (Linux 6.5), a pidfd of the very process that
// connected, or -1.
func readPeerCred(uc *net.UnixConn) (Caller, int, error) {
	raw, err := uc.SyscallConn()
	if err != nil {
		return Caller{}, -1, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	pidfd := -1
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr == nil {
			if pfd, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD); err == nil {
				pidfd = pfd
			}
		}
	}); err != nil {
		return Caller{}, -1, fmt.Errorf("peer credentials: %w", err)
	}
	if credErr != nil {
		return Caller{}, -1, fmt.Errorf("peer credentials: SO_PEERCRED: %w", credErr)
	}
	if cred.Pid <= 0 {
		if pidfd >= 0 {
			unix.Close(pidfd)
		}
		// A peer in another pid namespace shows up as pid 0: we cannot
		// look at its process, so we cannot attest it.
		return Caller{}, -1, fmt.Errorf("peer credentials: caller's pid is not visible from meshid's pid namespace (uid %d)", cred.Uid)
	}
	return Caller{PID: cred.Pid, UID: cred.Uid, GID: cred.Gid}, pidfd, nil
}

// trackedConn releases the caller's process handle with the connection.
type trackedConn struct {
	net.Conn
	proc *Process
}

func (c *trackedConn) Close() error {
	c.proc.Close()
	return c.Conn.Close()
}

func (peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peer credentials are server-side only")
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "meshid-peercred"}
}

func (peerCreds) Clone() credentials.TransportCredentials { return peerCreds{} }

// OverrideServerName is required by the interface and meaningless here.
func (peerCreds) OverrideServerName(string) error { return nil }
