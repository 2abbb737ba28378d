package harness

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/sys/unix"

	"github.com/meshid/meshid/ca"
)

// The ways a data_dir goes bad under a running meshid, made real: a small
// filesystem of its own that fills up, a directory nobody may write to, root
// included, and CA material from another time. See docs/reliability.md.

// fsImmutable is FS_IMMUTABLE_FL of linux/fs.h, the attribute chattr +i sets.
const fsImmutable = 0x10

// Tmpfs mounts a tmpfs of size bytes (rounded up to whole pages) at
// Env.Dir/elem..., creating the directory, and returns its path. The root
// of the mount is root's and mode 0700, as meshid wants its data_dir. Close
// unmounts it once the processes have stopped. It needs root (CAP_SYS_ADMIN).
func (e *Env) Tmpfs(size int64, elem ...string) (string, error) {
	dir := filepath.Join(append([]string{e.Dir}, elem...)...)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	opts := "size=" + strconv.FormatInt(size, 10) + ",mode=0700,uid=0,gid=0"
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, opts); err != nil {
		return "", fmt.Errorf("harness: mount tmpfs (%s) at %s: %w (needs root with CAP_SYS_ADMIN)", opts, dir, err)
	}
	e.mu.Lock()
	e.atClose = append(e.atClose, func() error {
		// Lazily: a process the harness did not start may still hold a file.
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			return fmt.Errorf("harness: unmount %s: %w", dir, err)
		}
		return nil
	})
	e.mu.Unlock()
	e.logf("harness: tmpfs of %d bytes at %s", size, dir)
	return dir, nil
}

// Fill writes the file dir/name until the filesystem holding dir has no
// space left, and returns its path and size: any later write there fails
// with ENOSPC until the file is removed. Any other error is returned.
func Fill(dir, name string) (string, int64, error) {
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
	if err != nil {
		return "", 0, fmt.Errorf("harness: fill %s: %w", dir, err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	var n int64
	for {
		w, err := f.Write(chunk)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			return "", n, fmt.Errorf("harness: fill %s: %w", dir, err)
		}
	}
	// A write cut short by ENOSPC may leave part of a page: fill it byte
	// by byte, so that not even a small file fits.
	for {
		w, err := f.Write(chunk[:1])
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			return path, n, nil
		}
		if err != nil {
			return "", n, fmt.Errorf("harness: fill %s: %w", dir, err)
		}
	}
}

// SetImmutable sets (on) or clears the immutable attribute of path, as
// chattr +i and chattr -i do: while it is set nobody, root included, may
// create, remove or rename anything in the directory, nor change the file.
// Close clears it, so that Env.Dir can be removed.
func (e *Env) SetImmutable(path string, on bool) error {
	if err := setImmutable(path, on); err != nil {
		return err
	}
	if on {
		e.mu.Lock()
		e.atClose = append(e.atClose, func() error { return setImmutable(path, false) })
		e.mu.Unlock()
	}
	return nil
}

func setImmutable(path string, on bool) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !on {
		return nil // removed since: nothing to clear
	}
	if err != nil {
		return fmt.Errorf("harness: chattr %s: %w", path, err)
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return fmt.Errorf("harness: read the attributes of %s: %w (a filesystem without chattr support?)", path, err)
	}
	if on {
		flags |= fsImmutable
	} else {
		flags &^= fsImmutable
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags)); err != nil {
		return fmt.Errorf("harness: chattr %s (immutable %v): %w (needs root with CAP_LINUX_IMMUTABLE)", path, on, err)
	}
	return nil
}

// MeshidDataDir returns the data_dir StartMeshid gives a meshid of this
// name (Env.Dir/NAME/data), so that a test can prepare it before the start
// (SeedCA, Tmpfs). It creates Env.Dir/NAME, 0755 like StartMeshid, so that
// other uids still reach the socket below it; data/ itself is left to the
// caller.
func (e *Env) MeshidDataDir(name string) (string, error) {
	dir, err := e.MkdirAll(name)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "data"), nil
}

// SeedCA writes a self-signed CA generation of trustDomain with lifetime
// ttl into dataDir, made by the ca package as meshid makes one, but as if
// age ago. meshid then starts on a timeline already under way: with age
// past ttl/2 the successor is due at once, with age past ttl the generation
// has expired, and with a negative age of more than 10s it starts in the
// future, which meshid refuses. The CA certificate is returned.
func SeedCA(dataDir, trustDomain string, ttl, age time.Duration) (*x509.Certificate, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, fmt.Errorf("harness: seed CA: %w", err)
	}
	a, err := ca.Open(ca.Options{
		TrustDomain: td,
		Dir:         dataDir,
		TTL:         ttl,
		Clock:       func() time.Time { return time.Now().Add(-age) },
	})
	if err != nil {
		return nil, fmt.Errorf("harness: seed CA in %s: %w", dataDir, err)
	}
	return a.Certificate(), nil
}
