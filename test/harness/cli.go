package harness

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
)

// StartCLI runs `meshid ARGS...` under uid as a Workload API client of m:
// SPIFFE_ENDPOINT_SOCKET points at m's socket, as it would for a workload,
// and it runs on m's host. The process is named after its first two arguments ("svid-watch").
func (m *Meshid) StartCLI(ctx context.Context, uid uint32, args ...string) (*Process, error) {
	bin, err := m.env.Binary("meshid")
	if err != nil {
		return nil, err
	}
	name := "cli"
	for _, a := range args[:min(2, len(args))] {
		if !strings.HasPrefix(a, "-") {
			name += "-" + a
		}
	}
	return m.env.Start(ctx, ProcSpec{
		Name: name,
		Path: bin,
		Args: args,
		UID:  uid,
		Env:  []string{"SPIFFE_ENDPOINT_SOCKET=unix://" + m.SocketPath},
		Host: m.host,
	})
}

// CLI runs `meshid ARGS...` like StartCLI and waits for it. It returns what
// the command printed (stdout and stderr together, in order) and its exit
// error (nil for status 0). If ctx ends first the command is stopped.
func (m *Meshid) CLI(ctx context.Context, uid uint32, args ...string) (string, error) {
	p, err := m.StartCLI(ctx, uid, args...)
	if err != nil {
		return "", err
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		p.Stop(time.Second)
		return p.Logs(), fmt.Errorf("harness: meshid %s: %w", strings.Join(args, " "), ctx.Err())
	}
	return p.Logs(), p.Wait()
}

// OwnedDir creates a directory inside Env.Dir owned by uid (and its gid
// uid, as ProcSpec does), mode 0755, for a workload to write in.
func (e *Env) OwnedDir(uid uint32, elem ...string) (string, error) {
	dir, err := e.MkdirAll(elem...)
	if err != nil {
		return "", err
	}
	if err := os.Chown(dir, int(uid), int(uid)); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	return dir, nil
}
