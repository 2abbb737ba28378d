package unixsock

import (
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// otherUID plays the local user who must not be able to take over the socket.
const otherUID = 12345

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the cases chown files to other uids")
	}
}

// publicDir returns a fresh root-owned 0755 directory in os.TempDir(), as a
// socket's home would be: every uid can reach what is inside.
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "unixsock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// mkdir creates path with exactly mode (sticky bit included), owned by uid.
func mkdir(t *testing.T, path string, mode uint32, uid int) {
	t.Helper()
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

// staleSocket leaves a socket file nobody serves, as a killed meshid does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
}

// liveSocket serves path until the test ends.
func liveSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func dialable(path string) bool {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// snapshot maps every name under base, symlinks unfollowed, to its mode.
func snapshot(t *testing.T, base string) map[string]fs.FileMode {
	t.Helper()
	modes := map[string]fs.FileMode{}
	err := filepath.WalkDir(base, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(base, path)
		modes[rel] = info.Mode()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return modes
}

// assertServes checks that path leads to lis.
func assertServes(t *testing.T, lis net.Listener, path string) {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	defer conn.Close()
	if err := lis.(*listener).SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	accepted, err := lis.Accept()
	if err != nil {
		t.Fatalf("%s does not lead to the listener: %v", path, err)
	}
	accepted.Close()
}

type listenCase struct {
	name  string
	setup func(t *testing.T, base string)
	sock  string // relative to base
	// wantErr is part of Listen's error; "" when Listen must succeed.
	wantErr string
	// check makes more assertions once Listen has returned.
	check func(t *testing.T, base string)
}

// runListenCases runs each case in a fresh publicDir. A refused Listen must
// leave the tree exactly as it was; an accepted one must add only the socket
// (0777) and the missing directories (0755), and change no mode.
func runListenCases(t *testing.T, cases []listenCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			base := publicDir(t)
			if tt.setup != nil {
				tt.setup(t, base)
			}
			sock := filepath.Join(base, tt.sock)
			before := snapshot(t, base)
			lis, err := Listen(sock)
			after := snapshot(t, base)
			if tt.wantErr != "" {
				if err == nil {
					lis.Close()
					t.Fatalf("Listen(%s) succeeded, want an error containing %q", sock, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), base) {
					t.Fatalf("err = %q, want it to contain %q and name the path", err, tt.wantErr)
				}
				if fmt.Sprint(before) != fmt.Sprint(after) {
					t.Errorf("a refused Listen changed the tree:\nbefore %v\nafter  %v", before, after)
				}
			} else {
				if err != nil {
					t.Fatalf("Listen(%s): %v", sock, err)
				}
				defer lis.Close()
				assertServes(t, lis, sock)
				if got := after[tt.sock]; got != fs.ModeSocket|0o777 {
					t.Errorf("socket mode = %v, want %v", got, fs.ModeSocket|0o777)
				}
				for name, mode := range after {
					old, existed := before[name]
					switch {
					case name == tt.sock:
					case existed && old != mode:
						t.Errorf("%s changed from %v to %v", name, old, mode)
					case !existed && mode != fs.ModeDir|0o755:
						t.Errorf("Listen left %s, mode %v; it may only add 0755 directories", name, mode)
					}
				}
				for name := range before {
					if _, ok := after[name]; !ok && name != tt.sock {
						t.Errorf("Listen removed %s", name)
					}
				}
			}
			if tt.check != nil {
				tt.check(t, base)
			}
		})
	}
}

func TestListenDirectoryRules(t *testing.T) {
	requireRoot(t)
	dir := func(name string, mode uint32, uid int) func(*testing.T, string) {
		return func(t *testing.T, base string) { mkdir(t, filepath.Join(base, name), mode, uid) }
	}
	dirs := func(steps ...func(*testing.T, string)) func(*testing.T, string) {
		return func(t *testing.T, base string) {
			for _, step := range steps {
				step(t, base)
			}
		}
	}
	runListenCases(t, []listenCase{
		{name: "socket dir 0755 of meshid's uid", setup: dir("d", 0o755, 0), sock: "d/agent.sock"},
		{name: "socket dir 0700 of meshid's uid", setup: dir("d", 0o700, 0), sock: "d/agent.sock"},
		{name: "socket dir owned by another uid", setup: dir("d", 0o755, otherUID), sock: "d/agent.sock", wantErr: "is owned by uid 12345, not by meshid's uid 0"},
		{name: "socket dir 0775", setup: dir("d", 0o775, 0), sock: "d/agent.sock", wantErr: "is mode 0775: group or others could replace the socket; chmod go-w"},
		{name: "socket dir 0777", setup: dir("d", 0o777, 0), sock: "d/agent.sock", wantErr: "is mode 0777"},
		{name: "socket dir 1777: sticky is not enough for the socket's own dir", setup: dir("d", 0o1777, 0), sock: "d/agent.sock", wantErr: "is mode 1777"},
		{name: "ancestor 0777 without sticky", setup: dirs(dir("a", 0o777, 0), dir("a/d", 0o755, 0)), sock: "a/d/agent.sock", wantErr: "is mode 0777: group or others can write it and, without the sticky bit"},
		{name: "ancestor 0775 without sticky", setup: dirs(dir("a", 0o775, 0), dir("a/d", 0o755, 0)), sock: "a/d/agent.sock", wantErr: "is mode 0775"},
		{name: "ancestor owned by another uid", setup: dirs(dir("a", 0o755, otherUID), dir("a/d", 0o755, 0)), sock: "a/d/agent.sock", wantErr: "is owned by uid 12345, who could replace the socket's directory"},
		{name: "ancestor 1777 owned by another uid", setup: dirs(dir("a", 0o1777, otherUID), dir("a/d", 0o755, 0)), sock: "a/d/agent.sock", wantErr: "is owned by uid 12345"},
		{name: "ancestor 1777 owned by root, like /tmp", setup: dirs(dir("a", 0o1777, 0), dir("a/d", 0o755, 0)), sock: "a/d/agent.sock"},
		{name: "missing socket dir in a 1777 ancestor is created", setup: dir("tmp", 0o1777, 0), sock: "tmp/meshid/agent.sock"},
		{name: "missing dirs are created", sock: "a/b/agent.sock"},
		{name: "issue 13: another uid made the socket dir first in a 1777 ancestor", setup: dirs(dir("tmp", 0o1777, 0), dir("tmp/meshid", 0o755, otherUID)), sock: "tmp/meshid/agent.sock", wantErr: "tmp/meshid is owned by uid 12345"},
		{name: "nothing is created under an unsafe ancestor", setup: dir("a", 0o777, 0), sock: "a/meshid/agent.sock", wantErr: "without the sticky bit"},
		{name: "socket dir is a file", setup: func(t *testing.T, base string) { writeFile(t, filepath.Join(base, "d"), "x", 0o644) }, sock: "d/agent.sock", wantErr: "is not a directory; move it away"},
	})
}

func TestListenFollowsNoSymlink(t *testing.T) {
	requireRoot(t)
	runListenCases(t, []listenCase{
		{
			name: "symlink at the socket path to a file",
			setup: func(t *testing.T, base string) {
				mkdir(t, filepath.Join(base, "d"), 0o755, 0)
				writeFile(t, filepath.Join(base, "victim"), "secret", 0o600)
				symlink(t, filepath.Join(base, "victim"), filepath.Join(base, "d/agent.sock"))
			},
			sock:    "d/agent.sock",
			wantErr: "exists and is not a socket; move it away",
		},
		{
			name: "symlink at the socket path to a stale socket",
			setup: func(t *testing.T, base string) {
				mkdir(t, filepath.Join(base, "d"), 0o755, 0)
				staleSocket(t, filepath.Join(base, "other.sock"))
				symlink(t, filepath.Join(base, "other.sock"), filepath.Join(base, "d/agent.sock"))
			},
			sock:    "d/agent.sock",
			wantErr: "exists and is not a socket",
		},
		{
			name: "socket dir is a symlink",
			setup: func(t *testing.T, base string) {
				mkdir(t, filepath.Join(base, "victim"), 0o700, 0)
				symlink(t, filepath.Join(base, "victim"), filepath.Join(base, "d"))
			},
			sock:    "d/agent.sock",
			wantErr: "d is a symlink to",
		},
		{
			name: "ancestor is a symlink",
			setup: func(t *testing.T, base string) {
				mkdir(t, filepath.Join(base, "victim"), 0o700, 0)
				symlink(t, filepath.Join(base, "victim"), filepath.Join(base, "a"))
			},
			sock:    "a/meshid/agent.sock",
			wantErr: "a is a symlink to",
		},
		{
			name: "dangling symlink as the socket dir",
			setup: func(t *testing.T, base string) {
				symlink(t, filepath.Join(base, "nowhere"), filepath.Join(base, "d"))
			},
			sock:    "d/agent.sock",
			wantErr: "d is a symlink to",
		},
	})
}

func TestListenStaleSocket(t *testing.T) {
	mkd := func(t *testing.T, base string) { mkdir(t, filepath.Join(base, "d"), 0o755, os.Geteuid()) }
	runListenCases(t, []listenCase{
		{
			name:  "a socket nobody serves is replaced",
			setup: func(t *testing.T, base string) { mkd(t, base); staleSocket(t, filepath.Join(base, "d/agent.sock")) },
			sock:  "d/agent.sock",
		},
		{
			name:    "a served socket is refused and keeps serving",
			setup:   func(t *testing.T, base string) { mkd(t, base); liveSocket(t, filepath.Join(base, "d/agent.sock")) },
			sock:    "d/agent.sock",
			wantErr: "is in use: is another meshid running?",
			check: func(t *testing.T, base string) {
				if !dialable(filepath.Join(base, "d/agent.sock")) {
					t.Error("the other server's socket no longer answers")
				}
			},
		},
		{
			name: "a regular file is refused and kept",
			setup: func(t *testing.T, base string) {
				mkd(t, base)
				writeFile(t, filepath.Join(base, "d/agent.sock"), "precious", 0o644)
			},
			sock:    "d/agent.sock",
			wantErr: "exists and is not a socket; move it away",
			check: func(t *testing.T, base string) {
				if got := readFile(t, filepath.Join(base, "d/agent.sock")); got != "precious" {
					t.Errorf("file now holds %q", got)
				}
			},
		},
		{
			name: "a directory is refused and kept",
			setup: func(t *testing.T, base string) {
				mkd(t, base)
				mkdir(t, filepath.Join(base, "d/agent.sock"), 0o755, os.Geteuid())
			},
			sock:    "d/agent.sock",
			wantErr: "exists and is not a socket",
		},
	})
}

func TestListenCreatesDirectoriesWhateverTheUmask(t *testing.T) {
	base := publicDir(t)
	defer syscall.Umask(syscall.Umask(0o077))
	sock := filepath.Join(base, "a/b/agent.sock")
	lis, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	for path, want := range map[string]fs.FileMode{
		filepath.Join(base, "a"):   fs.ModeDir | 0o755,
		filepath.Join(base, "a/b"): fs.ModeDir | 0o755,
		sock:                       fs.ModeSocket | 0o777,
	} {
		info, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode() != want {
			t.Errorf("%s is %v, want %v", path, info.Mode(), want)
		}
		if uid := info.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Geteuid() {
			t.Errorf("%s is owned by uid %d, want %d", path, uid, os.Geteuid())
		}
	}
	entries, err := os.ReadDir(filepath.Join(base, "a/b"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "agent.sock" {
		t.Errorf("a/b holds %v, want only agent.sock (no temporary directory left)", entries)
	}
}

// copyExecutable puts a copy of this test binary where otherUID can run it.
func copyExecutable(t *testing.T, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	path := filepath.Join(dir, "unixsock.test")
	dst, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestListenSocketReachableByOtherUIDs(t *testing.T) {
	requireRoot(t)
	base := publicDir(t)
	bin := copyExecutable(t, base)
	sock := filepath.Join(base, "meshid/agent.sock")
	lis, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()

	dialAsOther := func() error {
		cmd := exec.Command(bin)
		cmd.Dir = base
		cmd.Env = []string{dialAsChild + "=" + sock}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: otherUID, Gid: otherUID}}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	if err := dialAsOther(); err != nil {
		t.Fatalf("uid %d cannot connect to %s: %v", otherUID, sock, err)
	}
	// The child must be able to fail, or the success above proves nothing.
	if err := os.Chmod(sock, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := dialAsOther(); err == nil {
		t.Fatalf("uid %d connected to a 0700 socket: the child does not really run as that uid", otherUID)
	}
}

// TestListenPrivate: the admin socket is mode 0600 under the same rules,
// so another uid cannot connect while root (meshid) can.
func TestListenPrivate(t *testing.T) {
	requireRoot(t)
	base := publicDir(t)
	bin := copyExecutable(t, base)
	sock := filepath.Join(base, "meshid/admin.sock")
	lis, err := ListenPrivate(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	info, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode()&os.ModeSocket == 0 || info.Mode().Perm() != 0o600 {
		t.Errorf("admin socket mode %v, want a socket with mode 0600", info.Mode())
	}
	cmd := exec.Command(bin)
	cmd.Dir = base
	cmd.Env = []string{dialAsChild + "=" + sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: otherUID, Gid: otherUID}}
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("uid %d connected to the private socket: %s", otherUID, out)
	}
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("meshid's own uid cannot connect: %v", err)
	}
	conn.Close()
}

func TestListenAddrAndClose(t *testing.T) {
	t.Run("Addr is the path and Close removes the socket", func(t *testing.T) {
		sock := filepath.Join(publicDir(t), "agent.sock")
		lis, err := Listen(sock)
		if err != nil {
			t.Fatal(err)
		}
		if got := lis.Addr(); got.Network() != "unix" || got.String() != sock {
			t.Errorf("Addr() = %s %s, want unix %s", got.Network(), got, sock)
		}
		if err := lis.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(sock); !os.IsNotExist(err) {
			t.Errorf("after Close, Lstat(%s) = %v, want not exist", sock, err)
		}
	})
	t.Run("Close keeps a file that took the socket's name", func(t *testing.T) {
		sock := filepath.Join(publicDir(t), "agent.sock")
		lis, err := Listen(sock)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(sock); err != nil {
			t.Fatal(err)
		}
		writeFile(t, sock, "not yours", 0o644)
		lis.Close()
		if got := readFile(t, sock); got != "not yours" {
			t.Errorf("file now holds %q", got)
		}
	})
}

func TestListenPathShape(t *testing.T) {
	for _, tt := range []struct {
		name    string
		path    func(base string) string
		wantErr string // "" when Listen must succeed
	}{
		{"MaxPathLen bytes", func(base string) string {
			return base + "/" + strings.Repeat("s", MaxPathLen-len(base)-1)
		}, ""},
		{"one byte more", func(base string) string {
			return base + "/" + strings.Repeat("s", MaxPathLen-len(base))
		}, fmt.Sprintf("is %d bytes, longer than the %d a Unix socket path may have", MaxPathLen+1, MaxPathLen)},
		{"no file name", func(string) string { return "/" }, "/ names a directory; give the socket a file name"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.path(publicDir(t))
			lis, err := Listen(path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Listen of a %d-byte path: %v", len(path), err)
				}
				lis.Close()
				return
			}
			if err == nil {
				lis.Close()
				t.Fatalf("Listen(%s) succeeded, want %q", path, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Listen of a %d-byte path: err = %v, want %q", len(path), err, tt.wantErr)
			}
		})
	}
}

// TestListenSwapRace attacks the window issue 13 exploited: as soon as the
// socket exists, an attacker renames a symlink to a victim file over it,
// hoping meshid then chmods the socket by name. The directory passes the
// rules, but the attacker here is root and can write it anyway, so this
// shows the design never chmods by name even where that would be
// exploitable.
func TestListenSwapRace(t *testing.T) {
	requireRoot(t)
	base := publicDir(t)
	dir := filepath.Join(base, "d")
	mkdir(t, dir, 0o755, 0)
	sock := filepath.Join(dir, "agent.sock")
	victim := filepath.Join(base, "victim")
	writeFile(t, victim, "secret", 0o600)

	var swaps atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		link := filepath.Join(dir, "attack")
		for {
			select {
			case <-stop:
				return
			default:
			}
			if info, err := os.Lstat(sock); err != nil || info.Mode().Type() != fs.ModeSocket {
				continue
			}
			os.Remove(link)
			if os.Symlink(victim, link) == nil && os.Rename(link, sock) == nil {
				swaps.Add(1)
			}
		}
	})

	var listens int
	errs := map[string]int{}
	for deadline := time.Now().Add(5 * time.Second); (listens < 500 || swaps.Load() < 50) && time.Now().Before(deadline); {
		os.Remove(sock) // the operator moves the attacker's symlink away
		lis, err := Listen(sock)
		if err != nil {
			errs[strings.TrimPrefix(err.Error(), sock+" ")]++
			continue
		}
		listens++
		lis.Close()
	}
	close(stop)
	wg.Wait()

	info, err := os.Lstat(victim)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode() != 0o600 {
		t.Fatalf("victim is now %v, want -rw-------: Listen changed a file through a swapped symlink", info.Mode())
	}
	if swaps.Load() == 0 {
		t.Fatalf("the attacker never got a symlink over the socket in %d listens: the race was not exercised", listens)
	}
	t.Logf("%d listens, %d swaps, errors %v", listens, swaps.Load(), errs)
	if slices.ContainsFunc(entries(t, dir), func(name string) bool { return strings.HasPrefix(name, tmpPrefix) }) {
		t.Errorf("temporary directories left in %s: %v", dir, entries(t, dir))
	}
}

func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}
