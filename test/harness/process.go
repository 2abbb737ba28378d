package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// ProcSpec says how to start one process.
type ProcSpec struct {
	// Name identifies the process in logs and errors, and names its log
	// file Env.Dir/logs/NAME.log (a reused name gets a "-2" suffix).
	Name string
	Path string
	Args []string
	// Env is added to the harness's own environment.
	Env []string
	// UID runs the process under this uid; 0 keeps the harness's (root).
	UID uint32
	// GID is the process's group; 0 means "same as UID" when UID is set, so
	// a workload never silently lands in root's group (gid 0), which would
	// both widen its file access and blur gid-based attestation.
	GID uint32
	// Dir is the working directory; empty means Env.Dir.
	Dir string
	// Host starts the process in that host's network namespace; nil keeps
	// the harness's.
	Host *Host
}

// Process is a started process. Its stdout and stderr go to LogPath.
type Process struct {
	Name    string
	LogPath string

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited and been reaped
	err  error         // exit error, valid after done
}

// Start starts a process in its own process group with SIGKILL as its
// parent-death signal, so it dies with the harness even if the harness is
// killed. ctx is not used to kill the process: processes live until Stop or
// Env.Close.
func (e *Env) Start(ctx context.Context, spec ProcSpec) (*Process, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if spec.Name == "" || spec.Path == "" {
		return nil, errors.New("harness: ProcSpec needs Name and Path")
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, fmt.Errorf("harness: start %s: Env is closed", spec.Name)
	}
	name := spec.Name
	if n := e.names[spec.Name]; n > 0 {
		name = fmt.Sprintf("%s-%d", spec.Name, n+1)
	}
	e.names[spec.Name]++
	e.mu.Unlock()

	logPath := filepath.Join(e.Dir, "logs", name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("harness: start %s: %w", name, err)
	}
	defer logFile.Close() // the child has its own copy of the descriptor

	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Dir = spec.Dir
	if cmd.Dir == "" {
		cmd.Dir = e.Dir
	}
	// The child writes straight into the file: nothing to copy, nothing lost
	// if the harness dies, and the log can be read while the process runs.
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own group: Stop and Close signal the whole group, children too.
		Setpgid: true,
		// Set by the child after it switched uid (a uid change would clear
		// it), so it holds for processes under other uids as well. The kernel
		// sends it when the starting OS thread exits; Go only ends threads of
		// goroutines that exit while locked to their thread, so do not call
		// Start from such a goroutine.
		Pdeathsig: syscall.SIGKILL,
	}
	if spec.UID != 0 {
		gid := spec.GID
		if gid == 0 {
			gid = spec.UID
		}
		// No Groups: the child drops root's supplementary groups.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: spec.UID, Gid: gid}
	}
	start := cmd.Start
	if spec.Host != nil {
		start = func() error { return spec.Host.Do(cmd.Start) }
	}
	if err := start(); err != nil {
		return nil, fmt.Errorf("harness: start %s (%s): %w", name, spec.Path, err)
	}

	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		// Whatever the process left behind in its group dies with it. Safe
		// right after the reap: while a member lives the kernel cannot reuse
		// the group id, and if none lives the call finds no one.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		close(p.done)
	}()
	e.mu.Lock()
	e.procs = append(e.procs, p)
	closed := e.closed
	e.mu.Unlock()
	if closed { // Close ran while we were starting: do not outlive it.
		p.Stop(time.Second)
		return nil, fmt.Errorf("harness: start %s: Env closed while starting", name)
	}
	e.logf("harness: started %s pid %d uid %d: %s %s (log %s)",
		name, p.Pid(), spec.UID, spec.Path, strings.Join(spec.Args, " "), logPath)
	return p, nil
}

// Pid returns the process id (and process group id).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait blocks until the process exits and returns its exit error (nil for
// status 0, an *exec.ExitError otherwise).
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Signal sends sig to the process (not its group). Signalling a process
// that has already exited is not an error.
func (p *Process) Signal(sig os.Signal) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("harness: signal %s: %w", p.Name, err)
	}
	return nil
}

// Stop sends SIGTERM to the process group, then SIGKILL if it has not
// exited within grace. It returns nil once the process is gone, however it
// exited (use Wait for the exit status). Stopping a stopped process is a
// no-op.
func (p *Process) Stop(grace time.Duration) error {
	pgid := p.Pid()
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				return fmt.Errorf("harness: %s (pid %d) survived SIGKILL; see %s", p.Name, pgid, p.LogPath)
			}
		}
	}
	return nil
}

// Logs returns everything the process wrote to stdout and stderr so far.
func (p *Process) Logs() string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.LogPath, err)
	}
	return string(b)
}

// LogTail returns the last n lines of Logs.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", p.LogPath, err)
	}
	b = bytes.TrimRight(b, "\n")
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			if n--; n == 0 {
				return string(b[i+1:])
			}
		}
	}
	return string(b)
}

// state describes the process for error messages: "still running" or how
// it exited.
func (p *Process) state() string {
	select {
	case <-p.done:
		if p.err == nil {
			return "exited: exit status 0"
		}
		return "exited: " + p.err.Error()
	default:
		return "still running"
	}
}

// failure wraps err with the process's state and log tail, the first things
// anyone debugging it will want.
func (p *Process) failure(err error) error {
	return fmt.Errorf("%w\n%s (pid %d) %s; last lines of %s:\n%s",
		err, p.Name, p.Pid(), p.state(), p.LogPath, indent(p.LogTail(20)))
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
