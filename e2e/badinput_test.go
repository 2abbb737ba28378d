package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/test/harness"
)

// TestDaemonRefusesBadInput starts the real meshid binary on broken
// configuration, entries and policies: it must exit non-zero before serving
// anything, with a message that names the file and line to fix.
func TestDaemonRefusesBadInput(t *testing.T) {
	env := harness.ForTest(t)
	bin, err := env.Binary("meshid")
	if err != nil {
		t.Fatal(err)
	}
	policies := filepath.Join(env.Root, "policies")
	goodEntries := "entries:\n  - spiffe_id: spiffe://example.org/ns/demo/sa/backend\n    selectors: [\"unix:uid:1101\"]\n"

	tests := []struct {
		name     string
		config   string // %[1]s = the test's dir, %[2]s = policy dir, %[3]s/%[4]s = free addresses
		entries  string
		policy   string // replaces the shipped policies when set
		extra    string // appended to the default config, same arguments
		setup    func(t *testing.T, dir string)
		wantText []string
	}{
		{
			name:     "unknown config key",
			config:   "trust_domain: example.org\nsocket: /tmp/x.sock\n",
			wantText: []string{`meshid.yaml:2: unknown key "socket"`},
		},
		{
			name:     "invalid config values, all reported",
			config:   "trust_domain: example.org\nlog:\n  level: loud\nsvid:\n  x509_ttl: 1s\n",
			wantText: []string{"meshid.yaml:3: log.level", "meshid.yaml:5: svid.x509_ttl 1s is shorter than the minimum"},
		},
		{
			name:     "entry with a bad SPIFFE ID",
			entries:  "entries:\n  - spiffe_id: spiffe://example.org/a//b\n    selectors: [\"unix:uid:1101\"]\n",
			wantText: []string{`entries.yaml:2: spiffe_id "spiffe://example.org/a//b"`},
		},
		{
			name:     "entry with a bad selector",
			entries:  "entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors:\n      - unix:uid\n",
			wantText: []string{`entries.yaml:4: selector "unix:uid" has no value`},
		},
		{
			name:     "entry outside the trust domain",
			entries:  "entries:\n  - spiffe_id: spiffe://evil.org/a\n    selectors: [\"unix:uid:1101\"]\n",
			wantText: []string{`entries.yaml:2: spiffe_id "spiffe://evil.org/a" is outside the trust domain`},
		},
		{
			name:     "policy that does not parse",
			policy:   "package envoy.authz\n\ndefault allow := false\nallow if {\n  input.x ==\n}\n",
			wantText: []string{"authz.rego:6:1: rego_parse_error"},
		},
		{
			name:     "engine API socket missing",
			extra:    "docker: {socket_path: %[1]s/docker.sock}\n",
			wantText: []string{"docker.socket_path: stat ", "docker.sock: no such file or directory: is the engine running"},
		},
		{
			name:     "engine API socket is a directory (compose made one where a socket was missing)",
			extra:    "docker: {socket_path: %[1]s}\n",
			wantText: []string{"docker.socket_path: ", "is not a socket but a directory"},
		},
		{
			name:  "engine API refuses",
			extra: "docker: {socket_path: %[1]s/docker.sock}\n",
			setup: func(t *testing.T, dir string) {
				// A socket nobody listens on any more: connect is refused.
				l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "docker.sock"), Net: "unix"})
				if err != nil {
					t.Fatal(err)
				}
				l.SetUnlinkOnClose(false)
				l.Close()
			},
			wantText: []string{"docker.socket_path: Docker Engine API at ", "connection refused"},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, err := env.MkdirAll(fmt.Sprintf("bad-%d", i))
			if err != nil {
				t.Fatal(err)
			}
			policyDir := policies
			if tt.policy != "" {
				policyDir = filepath.Join(dir, "policies")
				write(t, filepath.Join(policyDir, "authz.rego"), tt.policy)
			}
			config := tt.config
			if config == "" {
				config = "trust_domain: example.org\ndata_dir: %[1]s/data\nsocket_path: %[1]s/sock/agent.sock\n" +
					"entries_file: %[1]s/entries.yaml\nauthz: {address: %[3]s, policy_dir: %[2]s}\nadmin: {address: %[4]s}\n"
				config = fmt.Sprintf(config+tt.extra, dir, policyDir, env.FreeAddr(), env.FreeAddr())
			}
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			entries := tt.entries
			if entries == "" {
				entries = goodEntries
			}
			write(t, filepath.Join(dir, "meshid.yaml"), config)
			write(t, filepath.Join(dir, "entries.yaml"), entries)

			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "run", "-config", filepath.Join(dir, "meshid.yaml"))
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("meshid run: %v, want exit status 1\n%s", err, out)
			}
			for _, w := range tt.wantText {
				if !strings.Contains(string(out), w) {
					t.Errorf("output does not name the problem %q:\n%s", w, out)
				}
			}
			for _, left := range []string{"sock/agent.sock", "data"} {
				if _, err := os.Stat(filepath.Join(dir, left)); err == nil {
					t.Errorf("meshid left %s behind although it refused to start", left)
				}
			}
			t.Logf("refused: %s", strings.TrimSpace(string(out)))
		})
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
