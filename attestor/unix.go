package attestor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
)

// Unix attests a process by what the kernel says about it: its uid and gid
// (from the socket) and the executable it runs (from procfs).
type Unix struct {
	// ProcDir is the procfs mount; tests point it elsewhere.
	ProcDir string
}

// Attest returns the unix selectors of the caller. When procfs will not
// show the executable (meshid may lack the privilege to read another user's
// /proc/PID/exe) the path selector is left out, so entries that require
// unix:path do not match: that fails closed. A caller that has already
// exited cannot be attested at all.
func (u Unix) Attest(_ context.Context, c Caller) ([]Selector, error) {
	sels := []Selector{
		{Type: "unix", Value: "uid:" + strconv.FormatUint(uint64(c.UID), 10)},
		{Type: "unix", Value: "gid:" + strconv.FormatUint(uint64(c.GID), 10)},
	}
	dir := u.ProcDir
	if dir == "" {
		dir = "/proc"
	}
	path, err := os.Readlink(fmt.Sprintf("%s/%d/exe", dir, c.PID))
	switch {
	case err == nil:
		sels = append(sels, Selector{Type: "unix", Value: "path:" + path})
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("attest pid %d: the process is gone", c.PID)
	}
	return sels, nil
}
