package attestor

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Process is a handle on the caller's process that outlives its pid: it
// notices when the process exits or when its pid comes to name another
// process, so selectors read from procfs are only trusted once the handle
// vouches they came from the process that connected, and whatever serves
// the process can stop when it exits (Exited).
//
// Where the kernel has pidfds it holds one, taken from the socket itself
// (SO_PEERPIDFD) or, on older kernels, by pid; the pidfd says for certain
// whether that process has exited. The start time from /proc/PID/stat and
// the effective uid and gid are checked as well, which is all there is on
// kernels without pidfds and on a fake procfs in tests.
type Process struct {
	PID int32
	UID uint32 // effective, as SO_PEERCRED reported it
	GID uint32

	procDir string
	start   uint64 // field 22 of /proc/PID/stat, clock ticks after boot
	// pidfd is nil when there is none. It is in the runtime's poller, so a
	// goroutine waiting for the exit parks there without holding a thread,
	// and closing it wakes that goroutine.
	pidfd *os.File
	// pollEvery is how often a watcher without a pollable pidfd looks in
	// procfs for the process.
	pollEvery time.Duration

	gone      chan struct{} // closed once the process has exited
	stop      chan struct{} // closed by Close
	watchDone chan struct{} // closed when the watcher has returned

	mu       sync.Mutex
	watching bool // Exited started the watcher
	closed   bool
}

// exitPollInterval is how often the exit is looked for in procfs where the
// kernel has no pidfds (before Linux 5.3): a stream then outlives its
// process by up to this long.
const exitPollInterval = time.Second

// openProcess takes hold of the process behind c. pidfd is one the caller
// already has for it (from SO_PEERPIDFD), or -1 to open one by pid.
// The handle owns pidfd from here on, even when it returns an error.
func openProcess(procDir string, c Caller, pidfd int) (*Process, error) {
	p := &Process{PID: c.PID, UID: c.UID, GID: c.GID, procDir: procDir, pollEvery: exitPollInterval,
		gone: make(chan struct{}), stop: make(chan struct{}), watchDone: make(chan struct{})}
	if pidfd < 0 && procDir == defaultProcDir {
		// Not having one costs the certainty of the exit notice; the start
		// time and the uid still catch a reused pid. No PIDFD_NONBLOCK
		// (Linux 5.10): SetNonblock below does the same on 5.3 onwards.
		if fd, err := unix.PidfdOpen(int(c.PID), 0); err == nil {
			pidfd = fd
		}
	}
	if pidfd >= 0 {
		// Non-blocking, os.NewFile puts it in the runtime's poller; should
		// that fail, the watcher looks in procfs instead.
		unix.SetNonblock(pidfd, true)
		p.pidfd = os.NewFile(uintptr(pidfd), "pidfd of pid "+strconv.Itoa(int(c.PID)))
	}
	start, err := p.startTime()
	if err != nil {
		p.Close()
		return nil, err
	}
	p.start = start
	// With a pidfd opened by pid, the pid may already have been reused
	// between connect and open: a process of another user is caught here.
	if err := p.checkCredentials(); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// defaultProcDir is where procfs is mounted; only there do pids name real
// processes that a pidfd can hold.
const defaultProcDir = "/proc"

// path returns the procfs path of one of the process's files.
func (p *Process) path(elem ...string) string {
	return filepath.Join(append([]string{p.procDir, strconv.Itoa(int(p.PID))}, elem...)...)
}

// Verify reports whether the process that connected is still alive and
// still the one at its pid, with the credentials it connected with. Call
// it after gathering selectors: only then are they known to be its own.
func (p *Process) Verify() error {
	if err := p.exited(); err != nil {
		return err
	}
	start, err := p.startTime()
	if err != nil {
		return err
	}
	if start != p.start {
		return &Error{Reason: ReasonPIDReused, Err: fmt.Errorf(
			"pid %d now names another process (start time %d, the caller's was %d)", p.PID, start, p.start)}
	}
	return p.checkCredentials()
}

// exited asks the pidfd, when there is one, whether the process has exited.
// A closed handle has no pidfd to ask.
func (p *Process) exited() error {
	if p.pidfd == nil {
		return nil
	}
	// SyscallConn and Control fail only on a closed handle: nothing to ask.
	rc, err := p.pidfd.SyscallConn()
	if err != nil {
		return nil //nolint:nilerr // a closed handle, see above
	}
	var gone bool
	var pollErr error
	if err := rc.Control(func(fd uintptr) { gone, pollErr = pollPidfd(int(fd)) }); err != nil {
		return nil //nolint:nilerr // a closed handle, see above
	}
	if pollErr != nil {
		return &Error{Reason: ReasonProcfs, Err: fmt.Errorf("pid %d: poll pidfd: %w", p.PID, pollErr)}
	}
	if gone {
		return errExited(p.PID)
	}
	return nil
}

// pollPidfd reports whether a pidfd's process has exited, without waiting:
// a pidfd polls readable once it has, reaped or not.
func pollPidfd(fd int) (bool, error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return false, err
		}
		return n > 0 && fds[0].Revents != 0, nil
	}
}

// Exited returns a channel that is closed once the process has exited, so
// that whatever serves it can stop with it. The first call starts a
// watcher: a goroutine parked on the pidfd in the runtime's poller or,
// without one, looking in procfs every exitPollInterval (a pid that is
// gone or names another process). Close stops the watcher; the channel
// then stays open, as nothing watches any more.
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.watching && !p.closed {
		p.watching = true
		go p.watch()
	}
	return p.gone
}

func (p *Process) watch() {
	defer close(p.watchDone)
	if p.pidfd != nil {
		if err := p.waitPidfd(); err == nil {
			close(p.gone)
			return
		}
		select {
		case <-p.stop:
			return
		default:
			// The poller cannot wait on this pidfd: look, as without one.
		}
	}
	t := time.NewTicker(p.pollEvery)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		if err := p.Verify(); err != nil {
			// Credentials that changed belong to the same process (it
			// called setuid); procfs failing to answer proves nothing.
			if r := Reason(err); r == ReasonExited || r == ReasonPIDReused {
				close(p.gone)
				return
			}
		}
	}
}

// waitPidfd returns once the process has exited, or with an error when the
// poller cannot wait on the pidfd or the handle was closed.
func (p *Process) waitPidfd() error {
	rc, err := p.pidfd.SyscallConn()
	if err != nil {
		return err
	}
	var pollErr error
	err = rc.Read(func(fd uintptr) bool {
		var gone bool
		gone, pollErr = pollPidfd(int(fd))
		return gone || pollErr != nil
	})
	if err != nil {
		return err
	}
	return pollErr
}

func errExited(pid int32) error {
	return &Error{Reason: ReasonExited, Err: fmt.Errorf("pid %d exited before it could be attested", pid)}
}

// startTime reads the process's start time from /proc/PID/stat.
func (p *Process) startTime() (uint64, error) {
	data, err := os.ReadFile(p.path("stat"))
	if err != nil {
		return 0, procErr(p.PID, err)
	}
	start, err := parseStartTime(data)
	if err != nil {
		return 0, &Error{Reason: ReasonProcfs, Err: fmt.Errorf("%s: %w", p.path("stat"), err)}
	}
	return start, nil
}

// parseStartTime extracts field 22 (starttime) of /proc/PID/stat. The
// command name (field 2) is in parentheses and may itself hold spaces and
// parentheses, so fields are counted from the last ")".
func parseStartTime(stat []byte) (uint64, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, errors.New("no command name in parentheses")
	}
	// After ")" come fields 3 onwards: state is fields[0], starttime fields[19].
	fields := strings.Fields(string(stat[end+1:]))
	if len(fields) < 20 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 20", len(fields))
	}
	start, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("start time %q: %w", fields[19], err)
	}
	return start, nil
}

// status is what meshid reads from /proc/PID/status.
type status struct {
	uid, gid [4]uint32 // real, effective, saved, filesystem
	groups   []uint32  // supplementary groups
}

func (p *Process) status() (status, error) {
	data, err := os.ReadFile(p.path("status"))
	if err != nil {
		return status{}, procErr(p.PID, err)
	}
	st, err := parseStatus(data)
	if err != nil {
		return status{}, &Error{Reason: ReasonProcfs, Err: fmt.Errorf("%s: %w", p.path("status"), err)}
	}
	return st, nil
}

func parseStatus(data []byte) (status, error) {
	var st status
	var haveUID, haveGID bool
	for line := range strings.SplitSeq(string(data), "\n") {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var err error
		switch key {
		case "Uid":
			haveUID = true
			err = parseIDs(value, st.uid[:])
		case "Gid":
			haveGID = true
			err = parseIDs(value, st.gid[:])
		case "Groups":
			for f := range strings.FieldsSeq(value) {
				g, perr := strconv.ParseUint(f, 10, 32)
				if perr != nil {
					err = fmt.Errorf("group %q is not a numeric id", f)
					break
				}
				st.groups = append(st.groups, uint32(g))
			}
		}
		if err != nil {
			return status{}, fmt.Errorf("%s: %w", key, err)
		}
	}
	if !haveUID || !haveGID {
		return status{}, errors.New("no Uid or Gid line")
	}
	return st, nil
}

func parseIDs(value string, out []uint32) error {
	fields := strings.Fields(value)
	if len(fields) != len(out) {
		return fmt.Errorf("%d ids, want %d", len(fields), len(out))
	}
	for i, f := range fields {
		id, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return fmt.Errorf("%q is not a numeric id", f)
		}
		out[i] = uint32(id)
	}
	return nil
}

// checkCredentials compares the process's effective uid and gid with the
// ones the kernel reported for the socket.
func (p *Process) checkCredentials() error {
	st, err := p.status()
	if err != nil {
		return err
	}
	if euid, egid := st.uid[1], st.gid[1]; euid != p.UID || egid != p.GID {
		return &Error{Reason: ReasonCredentialsChanged, Err: fmt.Errorf(
			"pid %d runs as uid %d gid %d, but connected as uid %d gid %d", p.PID, euid, egid, p.UID, p.GID)}
	}
	return nil
}

// procErr classifies a procfs read failure: a missing file means the
// process is gone.
func procErr(pid int32, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return errExited(pid)
	}
	return &Error{Reason: ReasonProcfs, Err: fmt.Errorf("pid %d: %w", pid, err)}
}

// Close releases the handle and stops its watcher, if any, before it
// returns. It is safe to call more than once.
func (p *Process) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	watching := p.watching
	p.mu.Unlock()
	close(p.stop)
	if p.pidfd != nil {
		p.pidfd.Close() // wakes a watcher parked on it
	}
	if watching {
		<-p.watchDone
	}
}
