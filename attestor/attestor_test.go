package attestor

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// child is a child process holding a connection to a socket of the test,
// accepted through PeerCredentials as meshid accepts callers.
type child struct {
	cmd    *exec.Cmd
	conn   net.Conn
	caller Caller
	exe    string
}

// connectPeer starts the test binary as a child under uid/gid (when root)
// and accepts its connection.
func connectPeer(t *testing.T, uid, gid uint32) *child {
	t.Helper()
	// Not t.TempDir: its parent is 0700, and the child may run as another
	// user that must reach the socket and its own binary.
	dir, err := os.MkdirTemp("", "meshid-attestor-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "attestor.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	os.Chmod(sock, 0o777)

	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "MESHID_TEST_HOLD="+sock)
	if os.Getuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &child{cmd: cmd, exe: bin}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	raw, err := lis.Accept()
	if err != nil {
		t.Fatal(err)
	}
	conn, info, err := PeerCredentials().ServerHandshake(raw)
	if err != nil {
		raw.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "connected\n" {
		t.Fatalf("child said %q", line)
	}
	p.conn, p.caller = conn, info.(AuthInfo).Caller
	return p
}

func testIDs() (uint32, uint32) {
	if os.Getuid() == 0 {
		return 4242, 4343
	}
	return uint32(os.Geteuid()), uint32(os.Getegid())
}

func TestAttestAPeerOverARealSocket(t *testing.T) {
	uid, gid := testIDs()
	p := connectPeer(t, uid, gid)
	if p.caller.PID != int32(p.cmd.Process.Pid) || p.caller.UID != uid || p.caller.GID != gid {
		t.Fatalf("caller = %+v, want pid %d uid %d gid %d", p.caller, p.cmd.Process.Pid, uid, gid)
	}
	a, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Attest(context.Background(), p.caller)
	if err != nil {
		t.Fatal(err)
	}
	s := selectorStrings(got)
	for _, want := range []string{"unix:uid:" + itoa(uid), "unix:gid:" + itoa(gid), "unix:path:" + p.exe} {
		if !slices.Contains(s, want) {
			t.Errorf("selectors %v lack %s", s, want)
		}
	}
	// The handle on the process goes with the connection.
	p.conn.Close()
	if rc, err := p.caller.proc.pidfd.SyscallConn(); err == nil && rc.Control(func(uintptr) {}) == nil {
		t.Error("pidfd still open after the connection closed")
	}
}

// killer is a plugin that kills the caller while it is being attested.
type killer struct {
	cmd  *exec.Cmd
	reap bool
}

func (k killer) attest(context.Context, *Process) ([]Selector, error) {
	k.cmd.Process.Signal(syscall.SIGKILL)
	if k.reap {
		k.cmd.Wait()
	} else {
		time.Sleep(50 * time.Millisecond) // dead but not reaped: a zombie
	}
	return []Selector{{Type: "unix", Value: "uid:0"}}, nil
}

func TestAttestFailsWhenTheCallerDiesMidAttestation(t *testing.T) {
	for _, reap := range []bool{false, true} {
		uid, gid := testIDs()
		p := connectPeer(t, uid, gid)
		a, err := New(Options{})
		if err != nil {
			t.Fatal(err)
		}
		a.plugins = append(a.plugins, killer{cmd: p.cmd, reap: reap})
		sels, err := a.Attest(context.Background(), p.caller)
		if Reason(err) != ReasonExited || sels != nil {
			t.Fatalf("reaped=%v: Attest = %v, %v; want no selectors and reason %s", reap, sels, err, ReasonExited)
		}
		t.Logf("reaped=%v: %v", reap, err)
	}
}

func TestAttestAProcessThatIsAlreadyGone(t *testing.T) {
	uid, gid := testIDs()
	p := connectPeer(t, uid, gid)
	p.cmd.Process.Kill()
	p.cmd.Wait()
	a, _ := New(Options{})
	if _, err := a.Attest(context.Background(), p.caller); Reason(err) != ReasonExited {
		t.Fatalf("Attest = %v, want reason %s", err, ReasonExited)
	}
	// A Caller made by hand for a pid that is gone fails the same way.
	if _, err := a.Attest(context.Background(), Caller{PID: p.caller.PID, UID: uid, GID: gid}); Reason(err) != ReasonExited {
		t.Fatalf("Attest by pid = %v, want reason %s", err, ReasonExited)
	}
}

func TestLookupCaller(t *testing.T) {
	c, err := LookupCaller(int32(os.Getpid()))
	if err != nil || c.UID != uint32(os.Geteuid()) || c.GID != uint32(os.Getegid()) {
		t.Fatalf("LookupCaller(self) = %+v, %v", c, err)
	}
	if _, err := LookupCaller(0); err == nil {
		t.Error("LookupCaller(0) succeeded")
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
