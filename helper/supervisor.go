package helper

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// supervisor starts the program once and sees it to its end: it forwards
// the stop as SIGTERM, kills the program if it is still there after grace,
// and reports its exit status.
type supervisor struct {
	argv           []string
	stdin          io.Reader
	stdout, stderr io.Writer
	grace          time.Duration
	log            *slog.Logger

	cmd    *exec.Cmd
	done   chan struct{} // closed once the program has exited; nil before start
	status int           // valid once done is closed
}

func newSupervisor(argv []string, stdin io.Reader, stdout, stderr io.Writer, grace time.Duration, log *slog.Logger) *supervisor {
	return &supervisor{argv: argv, stdin: stdin, stdout: stdout, stderr: stderr, grace: grace, log: log}
}

// start runs the program; it is an error to start it twice.
func (p *supervisor) start() error {
	if p.cmd != nil {
		return errors.New("program already started")
	}
	cmd := exec.Command(p.argv[0], p.argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = p.stdin, p.stdout, p.stderr
	// When stdout is not a file, Wait also waits for whatever inherited
	// the pipe; the program's own exit is what counts.
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("-cmd %s: %w", p.argv[0], err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	p.log.Info("started program", "pid", cmd.Process.Pid, "cmd", strings.Join(p.argv, " "))
	go func() {
		err := cmd.Wait()
		if errors.Is(err, exec.ErrWaitDelay) {
			err = nil // it exited 0; something it started holds the pipe
		}
		p.status = exitStatus(err)
		close(p.done)
	}()
	return nil
}

func (p *supervisor) started() bool { return p.cmd != nil }

// exited is closed when the program has exited; before start it is nil,
// so a select on it waits forever.
func (p *supervisor) exited() <-chan struct{} { return p.done }

// exitStatus is the program's, once exited is closed.
func (p *supervisor) exitStatus() int { return p.status }

func (p *supervisor) signal(sig os.Signal) error {
	if p.cmd == nil {
		return errors.New("program not started")
	}
	return p.cmd.Process.Signal(sig)
}

func (p *supervisor) pid() int {
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// stop sends SIGTERM and waits for the exit status, killing the program
// if it has not exited within grace. A program never started stops with 0.
func (p *supervisor) stop() int {
	if p.cmd == nil {
		return 0
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(p.grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		p.log.Warn("program ignored the signal; killing it", "pid", p.cmd.Process.Pid, "signal", syscall.SIGTERM, "grace", p.grace)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.status
}

// exitStatus is a program's exit code, 128+N when signal N killed it, as a
// shell reports it.
func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return 1
}
