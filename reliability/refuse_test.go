//go:build reliability

package reliability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/test/harness"
)

// TestRefusesUnsafeStart starts the real meshid on what it must not serve
// from: a socket directory, or one above it, that another uid could change
// (issue 13), CA material from the future or in a data_dir another uid
// owns or may write, an expired CA it cannot replace, and SVID lifetimes
// below the floor. Each must stop the start with exit status 1 and a
// message that names the path or file:line and the fix, before a socket
// exists, leaving CA material that was on disk untouched.
func TestRefusesUnsafeStart(t *testing.T) {
	env := harness.ForTest(t)
	bin, err := env.Binary("meshid")
	if err != nil {
		t.Fatal(err)
	}
	policies := filepath.Join(env.Root, "policies")
	const otherUID = harness.BackendAppUID

	tests := []struct {
		name string
		// setup prepares dir and returns the socket path (empty: the
		// default dir/sock/agent.sock) and the messages meshid must print.
		setup func(t *testing.T, dir string) (socket string, want []string)
		// config is appended to meshid.yaml; entries replaces the default.
		config, entries string
	}{
		{
			name: "socket directory owned by another uid",
			setup: func(t *testing.T, dir string) (string, []string) {
				sock := mkdir(t, dir, "sock", 0o755, otherUID)
				return filepath.Join(sock, "agent.sock"), []string{fmt.Sprintf("%s is owned by uid %d, not by meshid's uid 0, so its owner could replace the socket; remove it or chown 0 %s", sock, otherUID, sock)}
			},
		},
		{
			name: "socket directory mode 0777",
			setup: func(t *testing.T, dir string) (string, []string) {
				sock := mkdir(t, dir, "sock", 0o777, 0)
				return filepath.Join(sock, "agent.sock"), []string{sock + " is mode 0777: group or others could replace the socket"}
			},
		},
		{
			name: "a directory above the socket owned by another uid",
			setup: func(t *testing.T, dir string) (string, []string) {
				evil := mkdir(t, dir, "evil", 0o755, otherUID)
				return filepath.Join(evil, "sock", "agent.sock"), []string{fmt.Sprintf("%s is owned by uid %d, who could replace the socket's directory", evil, otherUID)}
			},
		},
		{
			name: "a directory above the socket writable by all, not sticky",
			setup: func(t *testing.T, dir string) (string, []string) {
				shared := mkdir(t, dir, "shared", 0o777, 0)
				return filepath.Join(shared, "sock", "agent.sock"), []string{shared + " is mode 0777: group or others can write it and, without the sticky bit, replace the socket's directory"}
			},
		},
		{
			name: "a symlink on the way to the socket",
			setup: func(t *testing.T, dir string) (string, []string) {
				real := mkdir(t, dir, "real", 0o755, 0)
				if err := os.Symlink(real, filepath.Join(dir, "link")); err != nil {
					t.Fatal(err)
				}
				return filepath.Join(dir, "link", "agent.sock"), []string{filepath.Join(dir, "link") + ` is a symlink to "` + real + `"; meshid follows no symlink`}
			},
		},
		{
			name: "CA generation that starts in the future",
			setup: func(t *testing.T, dir string) (string, []string) {
				if _, err := harness.SeedCA(filepath.Join(dir, "data"), harness.DemoTrustDomain, time.Hour, -time.Hour); err != nil {
					t.Fatal(err)
				}
				return "", []string{"ca.crt is not valid before", "fix the system clock, or remove " + filepath.Join(dir, "data", "ca", "000001")}
			},
		},
		{
			name: "data_dir owned by another uid",
			setup: func(t *testing.T, dir string) (string, []string) {
				data := mkdir(t, dir, "data", 0o700, otherUID)
				return "", []string{fmt.Sprintf("CA directory %s is owned by uid %d, not by meshid's uid 0; run: chown 0 %s", data, otherUID, data)}
			},
		},
		{
			name: "data_dir writable by its group",
			setup: func(t *testing.T, dir string) (string, []string) {
				data := mkdir(t, dir, "data", 0o770, 0)
				return "", []string{fmt.Sprintf("CA directory %s has mode 0770: group or others may write to it; run: chmod 700 %s", data, data)}
			},
		},
		{
			name: "expired CA generation and a read-only data_dir",
			setup: func(t *testing.T, dir string) (string, []string) {
				data := filepath.Join(dir, "data")
				if _, err := harness.SeedCA(data, harness.DemoTrustDomain, time.Hour, 2*time.Hour); err != nil {
					t.Fatal(err)
				}
				if err := env.SetImmutable(filepath.Join(data, "ca"), true); err != nil {
					t.Fatal(err)
				}
				return "", []string{"no valid CA generation", "operation not permitted", "check that data_dir " + data + " is writable"}
			},
		},
		{
			name:   "svid.x509_ttl below the floor",
			config: "svid:\n  x509_ttl: 1ns\n",
			setup: func(t *testing.T, dir string) (string, []string) {
				return "", []string{"meshid.yaml:10: svid.x509_ttl 1ns is shorter than the minimum 10s"}
			},
		},
		{
			name:    "an entry's x509_ttl below the floor",
			entries: "entries:\n  - spiffe_id: spiffe://example.org/ns/demo/sa/backend\n    selectors: [\"unix:uid:1101\"]\n    x509_ttl: 1ns\n",
			setup: func(t *testing.T, dir string) (string, []string) {
				return "", []string{"entries.yaml:4: x509_ttl 1ns is shorter than the minimum 10s"}
			},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, err := env.MkdirAll(fmt.Sprintf("refuse-%d", i))
			if err != nil {
				t.Fatal(err)
			}
			socket, want := tt.setup(t, dir)
			if socket == "" {
				socket = filepath.Join(dir, "sock", "agent.sock")
			}
			entries := tt.entries
			if entries == "" {
				entries = "entries:\n  - spiffe_id: spiffe://example.org/ns/demo/sa/backend\n    selectors: [\"unix:uid:1101\"]\n"
			}
			config := fmt.Sprintf("trust_domain: example.org\ndata_dir: %s\nsocket_path: %s\nentries_file: %s\nauthz:\n  address: %s\n  policy_dir: %s\nadmin: {address: %s}\n%s",
				filepath.Join(dir, "data"), socket, filepath.Join(dir, "entries.yaml"), env.FreeAddr(), policies, env.FreeAddr(), tt.config)
			for name, content := range map[string]string{"meshid.yaml": config, "entries.yaml": entries} {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			caBefore := caFiles(t, filepath.Join(dir, "data"))

			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			out, err := env.Run(ctx, harness.ProcSpec{Name: fmt.Sprintf("refuse-%d", i), Path: bin, Args: []string{"run", "-config", filepath.Join(dir, "meshid.yaml")}, Dir: dir})
			if exit, ok := errors.AsType[*exec.ExitError](err); !ok || exit.ExitCode() != 1 {
				t.Fatalf("meshid run: %v, want exit status 1\n%s", err, out)
			}
			for _, w := range want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not say %q:\n%s", w, out)
				}
			}
			if _, err := os.Lstat(socket); err == nil {
				t.Errorf("meshid created its socket %s although it refused to start", socket)
			}
			if after := caFiles(t, filepath.Join(dir, "data")); len(caBefore) > 0 && !bytes.Equal(after, caBefore) {
				t.Error("meshid changed the CA material on a refused start")
			}
			t.Logf("refused: %s", lastLine(out))
		})
	}
	report(t, "unsafe socket dirs (other uid, 0777, an ancestor, a symlink), future-dated or expired-and-unwritable CA, data_dir of another uid or group-writable, x509_ttl 1ns: exit 1 naming the path or file:line and the fix, no socket, CA material untouched",
		"%d refusals", len(tests))
}

// mkdir makes dir/name with mode and owner, whatever the umask.
func mkdir(t *testing.T, dir, name string, mode os.FileMode, uid int) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.Mkdir(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, uid, uid); err != nil {
		t.Fatal(err)
	}
	return path
}

// caFiles returns the contents of every CA file under data, in path order.
func caFiles(t *testing.T, data string) []byte {
	t.Helper()
	var all []byte
	err := filepath.WalkDir(data, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		all = append(append(all, path...), b...)
		return err
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return all
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}
