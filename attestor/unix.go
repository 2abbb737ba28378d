package attestor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"sync"
	"syscall"
)

// unixPlugin attests a process by what the kernel says about it: the uid
// and gid it connected with, their names, its supplementary groups, the
// executable it runs and, when enabled, that executable's digest.
type unixPlugin struct {
	hashes *hashCache // nil: no unix:sha256
}

func newUnix(withSHA256 bool) *unixPlugin {
	u := &unixPlugin{}
	if withSHA256 {
		u.hashes = &hashCache{sums: map[fileVersion]string{}}
	}
	return u
}

// attest never fails for a missing optional fact: a name that does not
// resolve or an executable meshid may not read (another user's
// /proc/PID/exe needs privilege) just leaves its selector out, so entries
// that require it do not match. That fails closed.
func (u *unixPlugin) attest(_ context.Context, p *Process) ([]Selector, error) {
	st, err := p.status()
	if err != nil {
		return nil, err
	}
	sels := []Selector{unixSel("uid", strconv.FormatUint(uint64(p.UID), 10)), unixSel("gid", strconv.FormatUint(uint64(p.GID), 10))}
	if u, err := user.LookupId(strconv.FormatUint(uint64(p.UID), 10)); err == nil {
		sels = append(sels, unixSel("user", u.Username))
	}
	if g, err := user.LookupGroupId(strconv.FormatUint(uint64(p.GID), 10)); err == nil {
		sels = append(sels, unixSel("group", g.Name))
	}
	for _, g := range st.groups {
		sels = append(sels, unixSel("supplementary_gid", strconv.FormatUint(uint64(g), 10)))
	}
	exe := p.path("exe")
	path, err := os.Readlink(exe)
	if err != nil {
		// A process that exited meanwhile is caught by Verify after the
		// plugins have run.
		return sels, nil //nolint:nilerr // not an attestation failure: see above
	}
	sels = append(sels, unixSel("path", path))
	if u.hashes != nil {
		if sum, err := u.hashes.sum(exe); err == nil {
			sels = append(sels, unixSel("sha256", sum))
		}
	}
	return sels, nil
}

func unixSel(key, value string) Selector { return Selector{Type: "unix", Value: key + ":" + value} }

// fileVersion identifies the content of a file without reading it: the
// same inode with the same size and modification time is taken to hold the
// same bytes. An executable being run cannot be written to (ETXTBSY), so
// in practice a new binary is a new inode.
type fileVersion struct {
	dev, ino uint64
	size     int64
	mtimeNs  int64
}

// maxCachedHashes bounds the digest cache; a node runs a bounded set of
// executables, and a full cache is simply started again.
const maxCachedHashes = 1024

type hashCache struct {
	mu   sync.Mutex
	sums map[fileVersion]string
}

// sum returns the hex SHA-256 of the file at path, read once per version.
// Opening /proc/PID/exe opens the file the process runs even if its path
// has since been replaced.
func (h *hashCache) sum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", errors.New("no inode information")
	}
	v := fileVersion{dev: st.Dev, ino: st.Ino, size: fi.Size(), mtimeNs: fi.ModTime().UnixNano()}
	h.mu.Lock()
	sum, ok := h.sums[v]
	h.mu.Unlock()
	if ok {
		return sum, nil
	}
	d := sha256.New()
	if _, err := io.Copy(d, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	sum = hex.EncodeToString(d.Sum(nil))
	h.mu.Lock()
	if len(h.sums) >= maxCachedHashes {
		clear(h.sums)
	}
	h.sums[v] = sum
	h.mu.Unlock()
	return sum, nil
}
