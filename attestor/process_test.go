package attestor

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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
		if p.pidfd < 0 {
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
