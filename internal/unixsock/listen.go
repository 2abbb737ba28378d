// Package unixsock opens meshid's Unix listeners: the workload socket and
// the unix:// authz sockets. Every local uid must be able to connect to
// them (socket 0777, directory 0755) because callers are told apart by their
// kernel credentials, not by file permissions. What the file system must
// still guarantee is that the name leads to meshid: this package owns that,
// and never decides who may call.
//
// # Directory rules
//
// Whoever can write the socket's directory, or replace any directory above
// it, can put their own server at the socket's name, or swap in a symlink
// that turns meshid's own file operations against another file. So Listen
// refuses to start when:
//   - the socket's directory is not owned by meshid's uid, or is writable by
//     group or others (sticky or not);
//   - an ancestor directory is owned by a uid other than root or meshid's,
//     or is writable by group or others without the sticky bit (/tmp, 1777
//     and root's, is fine: others can add names there but not replace ours,
//     and a directory they add is refused for its owner);
//   - any component of the path is a symlink: meshid never follows one, so
//     the directory it checked is the one it binds in.
//
// Missing directories are created 0755 whatever the umask. The walk opens
// each directory relative to its already checked parent with O_NOFOLLOW and
// checks the opened descriptor (fstat), so nothing can be swapped between
// the check and the use.
//
// # Setting the mode without a window
//
// chmod(path) after bind follows a symlink renamed over the socket in
// between (issue 13); fchmod on a socket's descriptor changes the socket, not
// its file; and widening the umask around bind is process-wide, so any
// goroutine creating a file at that moment would get it world-writable, which
// no mutex of ours can prevent. Instead Listen binds in a fresh 0700
// directory next to the socket's name, chmods the socket there, where no
// other uid can reach it, and link(2)s it to its name. link neither follows a
// symlink nor replaces an existing name, so the socket appears at its name
// already 0777 and no operation of meshid ever resolves that name to change a
// mode. Binding goes through /proc/self/fd of the checked directory, so the
// kernel reaches it by descriptor, not by walking the path again. Listen
// changes no process-wide state (umask, working directory), so concurrent
// calls need no lock.
//
// # Stale sockets
//
// A socket left by a meshid that died (connecting is refused) is removed; a
// socket somebody still serves is refused; a file that is not a socket is
// never deleted.
package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// MaxPathLen is the longest socket path Listen accepts: sun_path holds 108
// bytes including the terminating NUL that C clients such as Envoy add.
const MaxPathLen = 107

// tmpPrefix names the private directories the socket is bound in.
const tmpPrefix = ".unixsock-"

// The modes of meshid's sockets: connecting needs write permission.
const (
	// publicMode lets every uid connect: callers are identified by
	// SO_PEERCRED.
	publicMode = 0o777
	// privateMode lets only meshid's own uid connect (and root, which the
	// kernel does not hold to file modes).
	privateMode = 0o600
)

// Listen serves a Unix stream socket at path, mode 0777, after checking the
// directory rules of the package doc. Errors name the path and what to fix.
// Closing the listener removes the socket if path still names it.
func Listen(path string) (net.Listener, error) { return listen(path, publicMode) }

// ListenPrivate is Listen for a socket only meshid's uid and root may
// connect to (mode 0600), such as the admin socket.
func ListenPrivate(path string) (net.Listener, error) { return listen(path, privateMode) }

func listen(path string, mode uint32) (net.Listener, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	if len(path) > MaxPathLen {
		return nil, fmt.Errorf("%s is %d bytes, longer than the %d a Unix socket path may have; choose a shorter path", path, len(path), MaxPathLen)
	}
	dirPath, name := filepath.Split(path)
	if name == "" {
		return nil, fmt.Errorf("%s names a directory; give the socket a file name, such as %s", path, filepath.Join(path, "agent.sock"))
	}
	dir, err := openDir(filepath.Clean(dirPath))
	if err != nil {
		return nil, err
	}
	defer unix.Close(dir)
	if err := removeStale(dir, name, path); err != nil {
		return nil, err
	}
	return bindAndLink(dir, name, path, mode)
}

// bindAndLink creates the socket with mode in a private directory inside
// dir and links it to name (see "Setting the mode without a window").
func bindAndLink(dir int, name, path string, mode uint32) (net.Listener, error) {
	// A short name: the bind path must fit sun_path however long name is.
	tmp, err := os.MkdirTemp(fdPath(dir), tmpPrefix)
	if err != nil {
		return nil, fmt.Errorf("create a temporary directory next to %s (is /proc mounted?): %w", path, sysErr(err))
	}
	defer os.RemoveAll(tmp)
	tmpSock := filepath.Base(tmp) + "/s"

	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp + "/s", Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, sysErr(err))
	}
	// The bound name is the temporary one; Close removes the real one.
	l.SetUnlinkOnClose(false)
	if err := unix.Fchmodat(dir, tmpSock, mode, 0); err != nil {
		l.Close()
		return nil, fmt.Errorf("set the mode of %s: %w", path, err)
	}
	// Close recognizes the socket by its inode.
	var st unix.Stat_t
	if err := unix.Fstatat(dir, tmpSock, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		l.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if err := unix.Linkat(dir, tmpSock, dir, name, 0); err != nil {
		l.Close()
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("%s appeared while meshid was starting: is another meshid running?", path)
		}
		return nil, fmt.Errorf("put the socket at %s: %w", path, err)
	}
	return &listener{
		UnixListener: l,
		addr:         &net.UnixAddr{Name: path, Net: "unix"},
		dev:          st.Dev,
		ino:          st.Ino,
	}, nil
}

// listener reports the socket's real name, not the temporary one it was
// bound at, and removes that name on Close.
type listener struct {
	*net.UnixListener
	addr     *net.UnixAddr
	dev, ino uint64
	once     sync.Once
}

func (l *listener) Addr() net.Addr { return l.addr }

// Close stops listening and removes the socket, unless its name now leads to
// another file: that one is not ours to delete.
func (l *listener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		info, statErr := os.Lstat(l.addr.Name)
		if statErr != nil {
			return
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Dev == l.dev && st.Ino == l.ino {
			os.Remove(l.addr.Name)
		}
	})
	return err
}

// sysErr drops the /proc/self/fd name that path-based calls report, so that
// messages name only the socket's real path.
func sysErr(err error) error {
	if se, ok := errors.AsType[*os.SyscallError](err); ok {
		return se
	}
	if pe, ok := errors.AsType[*os.PathError](err); ok {
		return pe.Err
	}
	return err
}

// fdPath names the directory open as fd, so that path-based calls (mkdir,
// bind) reach it through the descriptor.
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
