package unixsock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// dirFlags open a directory for walking and fstat only, never through a
// symlink.
const dirFlags = unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// writableByOthers are the mode bits that let another uid add, remove or
// rename entries.
const writableByOthers = 0o022

// openDir walks the absolute, clean path from / and returns a descriptor of
// it once it and every ancestor pass the directory rules, creating what is
// missing. Each ancestor is checked before anything is looked up or created
// in it.
func openDir(path string) (int, error) {
	uid := os.Geteuid()
	fd, err := unix.Open("/", dirFlags, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: "/", Err: err}
	}
	cur := "/"
	for elem := range strings.SplitSeq(path, "/") {
		if elem == "" {
			continue
		}
		if err := checkAncestor(fd, cur, uid); err != nil {
			unix.Close(fd)
			return -1, err
		}
		next := filepath.Join(cur, elem)
		child, err := openChild(fd, elem, next)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd, cur = child, next
	}
	if err := checkSocketDir(fd, cur, uid); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// openChild opens the directory name inside parent, creating it if missing.
func openChild(parent int, name, path string) (int, error) {
	fd, err := unix.Openat(parent, name, dirFlags, 0)
	if errors.Is(err, unix.ENOENT) {
		return makeDir(parent, name, path)
	}
	if err != nil {
		return -1, openError(parent, name, path, err)
	}
	return fd, nil
}

// makeDir creates a missing directory, 0755 whatever the umask so that every
// uid can reach the socket. The parent passed checkAncestor, so no other uid
// can swap what it just created for something else before the fchmod.
func makeDir(parent int, name, path string) (int, error) {
	err := unix.Mkdirat(parent, name, 0o755)
	if errors.Is(err, unix.EEXIST) {
		// Created by someone else meanwhile: checked like any existing one.
		fd, err := unix.Openat(parent, name, dirFlags, 0)
		if err != nil {
			return -1, openError(parent, name, path, err)
		}
		return fd, nil
	}
	if errors.Is(err, unix.EACCES) {
		return -1, fmt.Errorf("create directory %s: %w; create it (owned by uid %d, mode 0755) or choose a socket path in a directory uid %d owns", path, err, os.Geteuid(), os.Geteuid())
	}
	if err != nil {
		return -1, fmt.Errorf("create directory %s: %w", path, err)
	}
	// O_PATH descriptors cannot fchmod.
	fd, err := unix.Openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, openError(parent, name, path, err)
	}
	if err := unix.Fchmod(fd, 0o755); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("set the mode of %s: %w", path, err)
	}
	return fd, nil
}

// openError explains why name in parent could not be opened as a directory.
func openError(parent int, name, path string, err error) error {
	var st unix.Stat_t
	if unix.Fstatat(parent, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			buf := make([]byte, unix.PathMax)
			n, _ := unix.Readlinkat(parent, name, buf)
			return fmt.Errorf("%s is a symlink to %q; meshid follows no symlink on the way to its socket: write the path it leads to instead", path, buf[:max(n, 0)])
		case unix.S_IFDIR:
		default:
			return fmt.Errorf("%s is not a directory; move it away or choose another socket path", path)
		}
	}
	return &os.PathError{Op: "open", Path: path, Err: err}
}

// checkAncestor refuses a directory above the socket's that lets another
// uid replace what it contains. Root's and meshid's own are trusted; the
// sticky bit keeps others from renaming or removing entries they do not
// own, so /tmp is fine.
func checkAncestor(fd int, path string, uid int) error {
	st, err := fstat(fd, path)
	if err != nil {
		return err
	}
	if st.Uid != 0 && int(st.Uid) != uid {
		return fmt.Errorf("%s is owned by uid %d, who could replace the socket's directory; make it root's or choose a socket path outside it", path, st.Uid)
	}
	if perm := st.Mode & 0o7777; perm&writableByOthers != 0 && perm&unix.S_ISVTX == 0 {
		return fmt.Errorf("%s is mode %04o: group or others can write it and, without the sticky bit, replace the socket's directory; chmod go-w %s (or chmod +t if others must create files there)", path, perm, path)
	}
	return nil
}

// checkSocketDir refuses a socket directory that anyone but meshid's uid can
// change: they could put their own server at the socket's name.
func checkSocketDir(fd int, path string, uid int) error {
	st, err := fstat(fd, path)
	if err != nil {
		return err
	}
	if int(st.Uid) != uid {
		return fmt.Errorf("%s is owned by uid %d, not by meshid's uid %d, so its owner could replace the socket; remove it or chown %d %s", path, st.Uid, uid, uid, path)
	}
	if perm := st.Mode & 0o7777; perm&writableByOthers != 0 {
		return fmt.Errorf("%s is mode %04o: group or others could replace the socket; chmod go-w %s, or give the socket a directory of its own", path, perm, path)
	}
	return nil
}

func fstat(fd int, path string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return st, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return st, nil
}
