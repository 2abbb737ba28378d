package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshid/meshid/test/svidtest"
)

func TestSVIDFetchWrite(t *testing.T) {
	ca := svidtest.NewCA(t, "example.org")
	s := ca.Fresh(t)
	sock := svidtest.ServeWorkloadAPI(t, ca, s)
	tests := []struct {
		name string
		args []string
		env  string
	}{
		{"-socket as a URI", []string{"-socket", "unix://" + sock}, ""},
		{"-socket as a path", []string{"-socket", sock}, ""},
		{"$SPIFFE_ENDPOINT_SOCKET as a path", nil, sock},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(workloadapi.SocketEnv, tt.env)
			dir := t.TempDir()
			out, _, err := runCmd(t, append([]string{"svid", "fetch", "-json", "-write", dir, "-key-file", "tls.key"}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			var r struct{ Written []string }
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatal(err)
			}
			want := []string{filepath.Join(dir, "svid.pem"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "bundle.pem")}
			if strings.Join(r.Written, " ") != strings.Join(want, " ") {
				t.Fatalf("written %v, want %v", r.Written, want)
			}
			got, err := x509svid.Load(want[0], want[1])
			if err != nil || !got.Certificates[0].Equal(s.Certificates[0]) {
				t.Fatalf("files hold another SVID: %v", err)
			}
			for path, mode := range map[string]os.FileMode{want[0]: 0o644, want[1]: 0o600, want[2]: 0o644} {
				if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
					t.Errorf("%s: %v, want mode %v", path, err, mode)
				}
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 3 {
				t.Fatalf("%s holds %d names, want the 3 files", dir, len(entries))
			}
		})
	}
}

// TestClientCommandsNameTheSocketSource: every Workload API client command
// takes its socket the same way, and says where a bad one came from.
func TestClientCommandsNameTheSocketSource(t *testing.T) {
	const badFlag = "tcp://127.0.0.1:8081"
	commands := [][]string{
		{"svid", "fetch", "ARGS"},
		{"svid", "watch", "-write", t.TempDir(), "ARGS"},
		{"jwt", "fetch", "-audience", "a", "ARGS"},
		{"jwt", "validate", "-audience", "a", "ARGS", "token"},
		{"bundle", "show", "ARGS"},
		{"healthcheck", "ARGS"},
	}
	with := func(cmd []string, extra ...string) []string {
		var out []string
		for _, a := range cmd {
			if a == "ARGS" {
				out = append(out, extra...)
			} else {
				out = append(out, a)
			}
		}
		return out
	}
	for _, cmd := range commands {
		t.Run(strings.TrimSuffix(cmd[0]+" "+cmd[1], " ARGS"), func(t *testing.T) {
			t.Setenv(workloadapi.SocketEnv, "agent.sock")
			_, _, err := runCmd(t, with(cmd)...)
			if want := `$SPIFFE_ENDPOINT_SOCKET "agent.sock": a relative path (want /path/to/agent.sock or unix:///path/to/agent.sock)`; err == nil || err.Error() != want {
				t.Errorf("from the environment: %v, want %q", err, want)
			}
			_, _, err = runCmd(t, with(cmd, "-socket", badFlag)...)
			if want := `-socket "` + badFlag + `": scheme "tcp": meshid serves the Workload API on a Unix socket only`; err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("from the flag: %v, want %q", err, want)
			}
		})
	}
}
