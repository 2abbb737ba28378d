package attestor

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestParseStartTime(t *testing.T) {
	tests := []struct {
		name, stat string
		want       uint64
		wantErr    string
	}{
		{"plain", "42 (envoy) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10", 123456, ""},
		{"spaces and parens in the name", "42 (a) b (c) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 99 1000 10", 99, ""},
		{"name only", "42 (envoy)", 0, "fields after the command name"},
		{"no name", "42 envoy S 1", 0, "no command name"},
		{"bad start", "42 (x) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 -5 1000", 0, `start time "-5"`},
		{"empty", "", 0, "no command name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStartTime([]byte(tt.stat))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseStartTime = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	st, err := parseStatus([]byte("Name:\tx\nUid:\t1 2 3 4\nGid:\t5\t6\t7\t8\nGroups:\t10 20 \n"))
	if err != nil {
		t.Fatal(err)
	}
	if st.uid != [4]uint32{1, 2, 3, 4} || st.gid != [4]uint32{5, 6, 7, 8} || len(st.groups) != 2 || st.groups[1] != 20 {
		t.Fatalf("parsed %+v", st)
	}
	for _, bad := range []string{"Uid:\t1 2 3\nGid:\t1 1 1 1\n", "Uid:\t1 1 1 1\n", "Uid:\tx 1 1 1\nGid:\t1 1 1 1\n", "Uid:\t1 1 1 1\nGid:\t1 1 1 1\nGroups:\t1 -2\n"} {
		if _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q) accepted", bad)
		}
	}
}

// TestVerifyOnAFakeProcfs swaps what is behind a pid the way pid reuse
// would, which a real kernel does not let a test arrange on demand.
func TestVerifyOnAFakeProcfs(t *testing.T) {
	orig := fakeProc{pid: 42, start: 100, uid: 1001, gid: 1002}
	tests := []struct {
		name       string
		swap       func(dir string)
		wantReason string
	}{
		{"unchanged", func(string) {}, ""},
		{"pid reused by a process of the same user", func(dir string) {
			p := orig
			p.start = 200
			p.write(t, dir)
		}, ReasonPIDReused},
		{"same process, new uid", func(dir string) {
			p := orig
			p.uid = 0
			p.write(t, dir)
		}, ReasonCredentialsChanged},
		{"same process, new gid", func(dir string) {
			p := orig
			p.gid = 0
			p.write(t, dir)
		}, ReasonCredentialsChanged},
		{"gone", func(dir string) { os.RemoveAll(filepath.Join(dir, "42")) }, ReasonExited},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			orig.write(t, dir)
			p, err := openProcess(dir, orig.caller(), -1)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			tt.swap(dir)
			err = p.Verify()
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("Verify = %v", err)
				}
				return
			}
			if got := Reason(err); got != tt.wantReason {
				t.Fatalf("Verify = %v (reason %q), want reason %q", err, got, tt.wantReason)
			}
		})
	}
}

func TestOpenProcessRefusesAnotherUsersProcess(t *testing.T) {
	dir := t.TempDir()
	p := fakeProc{pid: 7, start: 1, uid: 1001, gid: 1001}
	p.write(t, dir)
	c := p.caller()
	c.UID = 1002 // the socket said 1002: the pid was reused before we looked
	if _, err := openProcess(dir, c, -1); Reason(err) != ReasonCredentialsChanged {
		t.Fatalf("openProcess = %v, want %s", err, ReasonCredentialsChanged)
	}
	if _, err := openProcess(dir, Caller{PID: 8}, -1); Reason(err) != ReasonExited {
		t.Fatalf("openProcess of a missing pid = %v, want %s", err, ReasonExited)
	}
}

// TestPidfdSeesTheExit uses a real child: a pidfd reports its exit at
// once, whether or not its parent has reaped it yet.
func TestPidfdSeesTheExit(t *testing.T) {
	for _, reap := range []bool{false, true} {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c := Caller{PID: int32(cmd.Process.Pid), UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
		p, err := openProcess(defaultProcDir, c, -1)
		if err != nil {
			t.Fatal(err)
		}
		if p.pidfd == nil {
			t.Skip("this kernel has no pidfd_open")
		}
		if err := p.Verify(); err != nil {
			t.Fatalf("Verify of a live child: %v", err)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		if reap {
			cmd.Wait()
		} else {
			// Wait for it to die but leave it unreaped, a zombie: its
			// /proc entry stays, only the pidfd knows it is dead.
			var info unix.Siginfo
			for {
				if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); !errors.Is(err, unix.EINTR) {
					break
				}
			}
		}
		if err := p.Verify(); Reason(err) != ReasonExited {
			t.Errorf("reaped=%v: Verify after the child died = %v, want %s", reap, err, ReasonExited)
		}
		p.Close()
		if !reap {
			cmd.Wait()
		}
	}
}

// exitWatch is one way a handle can come to know of its process's exit.
type exitWatch struct {
	name string
	// open returns a handle on a live child of the test and kills it.
	open func(t *testing.T) (p *Process, kill func())
}

func exitWatches() []exitWatch {
	// sleeper is a child process and a handle on it opened by pid.
	sleeper := func(t *testing.T) (*Process, func()) {
		t.Helper()
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		c := Caller{PID: int32(cmd.Process.Pid), UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())}
		p, err := openProcess(defaultProcDir, c, -1)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		if p.pidfd == nil {
			t.Skip("this kernel has no pidfd_open")
		}
		// Killed, not reaped: a zombie keeps its /proc entry, only the
		// pidfd (or, without one, its state) says it is gone.
		return p, func() { cmd.Process.Signal(syscall.SIGKILL) }
	}
	return []exitWatch{
		{"pidfd from SO_PEERPIDFD", func(t *testing.T) (*Process, func()) {
			uid, gid := testIDs()
			c := connectPeer(t, uid, gid)
			if c.caller.proc.pidfd == nil {
				t.Skip("no pidfd: the kernel has neither SO_PEERPIDFD nor pidfd_open")
			}
			return c.caller.proc, func() { c.cmd.Process.Signal(syscall.SIGKILL) }
		}},
		{"pidfd opened by pid (no SO_PEERPIDFD)", sleeper},
		{"a pidfd the poller cannot wait on", func(t *testing.T) (*Process, func()) {
			p, kill := sleeper(t)
			fd, err := unix.PidfdOpen(int(p.PID), 0) // blocking: os.NewFile leaves it out of the poller
			if err != nil {
				t.Fatal(err)
			}
			p.pidfd.Close()
			p.pidfd = os.NewFile(uintptr(fd), "blocking pidfd")
			p.pollEvery = 5 * time.Millisecond
			return p, kill
		}},
		{"no pidfd (before Linux 5.3): procfs", func(t *testing.T) (*Process, func()) {
			p, kill := sleeper(t)
			p.pidfd.Close()
			p.pidfd = nil
			p.pollEvery = 5 * time.Millisecond
			return p, func() {
				kill()
				// A zombie is still in procfs with its start time: only
				// its parent reaping it takes it away.
				exec.Command("true").Run()
				var info unix.Siginfo
				unix.Waitid(unix.P_PID, int(p.PID), &info, unix.WEXITED, nil)
			}
		}},
	}
}

func TestExitedIsClosedWhenTheProcessExits(t *testing.T) {
	for _, w := range exitWatches() {
		t.Run(w.name, func(t *testing.T) {
			p, kill := w.open(t)
			exited := p.Exited()
			select {
			case <-exited:
				t.Fatal("Exited closed while the process is alive")
			case <-time.After(50 * time.Millisecond):
			}
			start := time.Now()
			kill()
			select {
			case <-exited:
				t.Logf("exit seen after %v", time.Since(start))
			case <-time.After(5 * time.Second):
				t.Fatal("Exited not closed 5s after the process was killed")
			}
			if p.Exited() != exited {
				t.Error("a second call to Exited returned another channel")
			}
			if err := p.Verify(); Reason(err) != ReasonExited {
				t.Errorf("Verify after the exit = %v, want %s", err, ReasonExited)
			}
		})
	}
}

// Close before the exit stops the watcher before it returns, and leaves
// the channel open: nothing watches any more.
func TestCloseStopsTheExitWatcher(t *testing.T) {
	for _, w := range exitWatches() {
		t.Run(w.name, func(t *testing.T) {
			p, _ := w.open(t)
			before := goleak.IgnoreCurrent()
			exited := p.Exited()
			select {
			case <-p.watchDone:
				t.Fatal("the watcher returned before the exit or Close")
			default:
			}
			p.Close()
			select {
			case <-p.watchDone:
			default:
				t.Fatal("Close returned before the watcher did")
			}
			if err := goleak.Find(before); err != nil {
				t.Fatalf("the watcher outlived Close: %v", err)
			}
			select {
			case <-exited:
				t.Fatal("Close closed Exited's channel")
			default:
			}
			if p.Exited(); goleak.Find(before) != nil {
				t.Fatal("Exited after Close started a watcher")
			}
		})
	}
}

// On a fake procfs (no pidfd) the watcher looks for the process every
// pollEvery: a pid gone or reused is an exit, new credentials are not.
func TestExitedOnAFakeProcfs(t *testing.T) {
	orig := fakeProc{pid: 42, start: 100, uid: 1001, gid: 1002}
	tests := []struct {
		name       string
		swap       func(dir string)
		wantExited bool
	}{
		{"gone", func(dir string) { os.RemoveAll(filepath.Join(dir, "42")) }, true},
		{"pid reused", func(dir string) {
			p := orig
			p.start = 200
			p.write(t, dir)
		}, true},
		{"same process, new uid", func(dir string) {
			// Replaced in one rename: the process never seems to vanish.
			p := orig
			p.uid = 0
			p.write(t, filepath.Join(dir, "new"))
			if err := os.Rename(filepath.Join(dir, "new", "42", "status"), filepath.Join(dir, "42", "status")); err != nil {
				t.Fatal(err)
			}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			orig.write(t, dir)
			p, err := openProcess(dir, orig.caller(), -1)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			p.pollEvery = time.Millisecond
			exited := p.Exited()
			tt.swap(dir)
			wait := 5 * time.Second
			if !tt.wantExited {
				wait = 50 * time.Millisecond // fifty looks
			}
			select {
			case <-exited:
				if !tt.wantExited {
					t.Fatal("Exited closed for a process that is still there")
				}
			case <-time.After(wait):
				if tt.wantExited {
					t.Fatal("Exited not closed")
				}
			}
		})
	}
}
