package unixsock

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// removeStale clears the way for name in dir: a socket left by a meshid that
// died is removed, but one still served is refused, and a file that is not a
// socket is never deleted.
func removeStale(dir int, name, path string) error {
	var st unix.Stat_t
	err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s exists and is not a socket; move it away", path)
	}
	// Connecting changes no file, so going by name here is harmless, and
	// unlike a /proc/self/fd name the path is known to fit sun_path.
	conn, err := net.Dial("unix", path)
	if err == nil {
		conn.Close()
		return fmt.Errorf("%s is in use: is another meshid running?", path)
	}
	// Only a refusal proves nobody serves it; a busy server's backlog, say,
	// must not cost it its socket.
	if !errors.Is(err, unix.ECONNREFUSED) {
		return fmt.Errorf("%s exists and meshid cannot tell whether it is still served: %w", path, sysErr(err))
	}
	if err := unix.Unlinkat(dir, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	return nil
}
