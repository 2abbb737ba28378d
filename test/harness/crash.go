package harness

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"time"
)

// Kill sends SIGKILL to the process alone, as `kill -9 PID` does, and
// waits up to timeout until it has been reaped. Nothing of the process's
// own runs: no shutdown, no cleanup, its sockets and files stay behind. It
// returns when the process was seen gone; killing an exited process is a
// no-op.
func (p *Process) Kill(timeout time.Duration) error {
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("harness: %s (pid %d) still there %v after SIGKILL", p.Name, p.Pid(), timeout)
	}
}

// Run starts spec like Start and waits for it to exit. It returns what the
// process printed (stdout and stderr together, in order) and its exit
// error (nil for status 0, an *exec.ExitError otherwise). If ctx ends
// first the process is stopped and the error says so.
func (e *Env) Run(ctx context.Context, spec ProcSpec) (string, error) {
	p, err := e.Start(ctx, spec)
	if err != nil {
		return "", err
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		p.Stop(time.Second)
		return p.Logs(), fmt.Errorf("harness: %s %s: %w", spec.Path, strings.Join(spec.Args, " "), ctx.Err())
	}
	return p.Logs(), p.Wait()
}
