package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshid/meshid/test/svidtest"
	"github.com/meshid/meshid/test/syncbuf"
)

// TestEveryClientCommandTakesTheSocket: each command that asks meshid on
// its socket reaches it however the socket is given, over a real socket.
func TestEveryClientCommandTakesTheSocket(t *testing.T) {
	ca := svidtest.NewCA(t, "example.org")
	sock := svidtest.ServeWorkloadAPI(t, ca, ca.Fresh(t))
	token := func(t *testing.T) string {
		t.Setenv(workloadapi.SocketEnv, "")
		out, _, err := runCmd(t, "jwt", "fetch", "--socket", sock, "--audience", "payments", "--token")
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	commands := []struct {
		name string
		args func(t *testing.T) []string
		want string
	}{
		{"svid fetch", func(*testing.T) []string { return []string{"svid", "fetch"} }, "SPIFFE ID  spiffe://example.org/app\n"},
		{"svid watch", func(t *testing.T) []string {
			dir := t.TempDir()
			return []string{"svid", "watch", "--write", dir, "--", "sh", "-c", `test -s "$0/svid.pem"`, dir}
		}, ""},
		{"jwt fetch", func(*testing.T) []string { return []string{"jwt", "fetch", "--audience", "payments"} }, "Audience   payments\n"},
		{"jwt validate", func(t *testing.T) []string { return []string{"jwt", "validate", token(t), "--audience", "payments"} }, "valid\nSPIFFE ID  spiffe://example.org/app\n"},
		{"bundle show", func(*testing.T) []string { return []string{"bundle", "show"} }, "# spiffe://example.org\n-----BEGIN CERTIFICATE-----"},
		{"healthcheck", func(*testing.T) []string { return []string{"healthcheck"} }, "ok    svid      spiffe://example.org/app expires in "},
	}
	forms := []struct {
		name string
		flag []string
		env  string
	}{
		{"--socket PATH", []string{"--socket", sock}, ""},
		{"--socket unix:///PATH", []string{"--socket", "unix://" + sock}, ""},
		{"-socket=PATH", []string{"-socket=" + sock}, ""},
		{"$SPIFFE_ENDPOINT_SOCKET PATH", nil, sock},
		{"$SPIFFE_ENDPOINT_SOCKET unix:///PATH", nil, "unix://" + sock},
		{"the flag over the environment", []string{"--socket", sock}, "unix:///nonexistent/agent.sock"},
	}
	for _, c := range commands {
		for _, f := range forms {
			t.Run(c.name+" "+f.name, func(t *testing.T) {
				args := c.args(t)
				t.Setenv(workloadapi.SocketEnv, f.env)
				if c.name == "svid watch" { // the flags before "--"
					args = append(append(args[:4:4], f.flag...), args[4:]...)
				} else {
					args = append(args, f.flag...)
				}
				out, stderr, err := runLocked(t, args...)
				if err != nil {
					t.Fatalf("meshid %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
				}
				if !strings.Contains(out, c.want) {
					t.Fatalf("meshid %s printed\n%s\nwant %q", strings.Join(args, " "), out, c.want)
				}
			})
		}
	}
}

func TestBundleShowFormats(t *testing.T) {
	ca := svidtest.NewCA(t, "example.org")
	sock := svidtest.ServeWorkloadAPI(t, ca, ca.Fresh(t))
	pem := func(t *testing.T, out string) {
		b, err := x509bundle.Parse(ca.TD, []byte(out))
		if err != nil || !b.X509Authorities()[0].Equal(ca.Root) {
			t.Fatalf("not the roots as PEM: %v\n%s", err, out)
		}
	}
	spiffe := func(t *testing.T, out string) {
		b, err := spiffebundle.Parse(ca.TD, []byte(out))
		if err != nil || !b.X509Authorities()[0].Equal(ca.Root) || !b.HasJWTAuthority(svidtest.JWTKeyID) {
			t.Fatalf("not the SPIFFE bundle: %v\n%s", err, out)
		}
	}
	tests := []struct {
		args  []string
		check func(*testing.T, string)
	}{
		{nil, pem},
		{[]string{"--format", "pem"}, pem},
		{[]string{"--format", "spiffe"}, spiffe},
		{[]string{"-format", "spiffe"}, spiffe},
		{[]string{"--format=jwks"}, spiffe},
		{[]string{"--format", "spiffe", "--trust-domain", "example.org"}, spiffe},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, _, err := runCmd(t, append([]string{"bundle", "show", "--socket", sock}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, out)
		})
	}
	if _, _, err := runCmd(t, "bundle", "show", "--socket", sock, "--format", "spiffe", "--trust-domain", "other.org"); err == nil ||
		exitStatus(err) != 1 || !strings.Contains(err.Error(), "no bundle for other.org (it has: example.org)") {
		t.Errorf("a trust domain meshid does not give: %v", err)
	}
}

func TestJWTCommands(t *testing.T) {
	ca := svidtest.NewCA(t, "example.org")
	sock := svidtest.ServeWorkloadAPI(t, ca, ca.Fresh(t))
	t.Setenv(workloadapi.SocketEnv, sock)

	out, _, err := runCmd(t, "jwt", "fetch", "-audience", "a", "-audience", "b", "-json")
	var fetched struct {
		SPIFFEID string   `json:"spiffe_id"`
		Audience []string `json:"audience"`
		Token    string   `json:"token"`
	}
	if err != nil || json.Unmarshal([]byte(out), &fetched) != nil || fetched.SPIFFEID != "spiffe://example.org/app" ||
		strings.Join(fetched.Audience, ",") != "a,b" || strings.Count(fetched.Token, ".") != 2 {
		t.Fatalf("jwt fetch: %v\n%s", err, out)
	}
	tests := []struct {
		name    string
		args    []string
		status  int
		want    string
		wantErr string
	}{
		{"flag first", []string{"--audience", "b", fetched.Token}, 0, "valid\nSPIFFE ID  spiffe://example.org/app\nAudience   a, b\n", ""},
		{"flag after the token", []string{fetched.Token, "-audience", "a"}, 0, "valid\n", ""},
		{"json", []string{fetched.Token, "--audience", "a", "--json"}, 0, `"spiffe_id": "spiffe://example.org/app"`, ""},
		{"another audience", []string{fetched.Token, "--audience", "c"}, 1, "", "InvalidArgument"},
		{"no audience", []string{fetched.Token}, 2, "", "want -audience A and exactly one TOKEN"},
		{"two tokens", []string{fetched.Token, fetched.Token, "--audience", "a"}, 2, "", "want -audience A and exactly one TOKEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCmd(t, append([]string{"jwt", "validate"}, tt.args...)...)
			if exitStatus(err) != tt.status || !strings.Contains(out, tt.want) || (tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("exit %d (%v), out\n%s\nwant exit %d, %q, error %q", exitStatus(err), err, out, tt.status, tt.want, tt.wantErr)
			}
		})
	}
}

// TestSVIDWatchProgram: what follows --cmd or "--" is the program, flags
// and all, and svid watch exits with its status.
func TestSVIDWatchProgram(t *testing.T) {
	ca := svidtest.NewCA(t, "example.org")
	sock := svidtest.ServeWorkloadAPI(t, ca, ca.Fresh(t))
	for _, tt := range []struct {
		name   string
		prog   []string
		status int
	}{
		{"-cmd", []string{"-cmd", "sh", "-c", "exit 3"}, 3},
		{"--cmd", []string{"--cmd", "sh", "-c", "exit 0"}, 0},
		{"--", []string{"--", "sh", "-c", "exit 4"}, 4},
		{"-- with the program's own -h", []string{"--", "sh", "-c", "exit 5", "-h"}, 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, stderr, err := runLocked(t, append([]string{"svid", "watch", "-socket", sock, "-write", dir}, tt.prog...)...)
			if exitStatus(err) != tt.status {
				t.Fatalf("exit %d (%v), want %d\n%s", exitStatus(err), err, tt.status, stderr)
			}
			if _, err := os.Stat(filepath.Join(dir, "svid.pem")); err != nil {
				t.Fatalf("the program ran before its files were written: %v", err)
			}
		})
	}
}

// runLocked is runCmd for commands that write from several goroutines
// (svid watch: its log and its program's output).
func runLocked(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut syncbuf.Buffer
	err = dispatch(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// TestEnvoyBootstrapSocket: Envoy dials a path; --socket takes a path or
// a unix:// URI as the other commands do.
func TestEnvoyBootstrapSocket(t *testing.T) {
	sidecar := []string{"envoy", "bootstrap", "--spiffe-id", "spiffe://example.org/web", "--outbound", "127.0.0.1:15001", "--peer", "127.0.0.1:8443", "--peer-id", "spiffe://example.org/api"}
	for _, tt := range []struct {
		flag    []string
		want    string
		wantErr string
	}{
		{nil, `path: "/run/meshid/agent.sock"`, ""},
		{[]string{"--socket", "/var/run/meshid.sock"}, `path: "/var/run/meshid.sock"`, ""},
		{[]string{"--socket", "unix:///var/run/meshid.sock"}, `path: "/var/run/meshid.sock"`, ""},
		{[]string{"-socket=unix:///var/run/meshid.sock"}, `path: "/var/run/meshid.sock"`, ""},
		{[]string{"--socket", "unix://var/run/meshid.sock"}, "", `-socket "unix://var/run/meshid.sock": "var" is read as a host`},
		{[]string{"--socket", "tcp://127.0.0.1:1"}, "", `-socket "tcp://127.0.0.1:1": scheme "tcp"`},
	} {
		out, _, err := runCmd(t, append(sidecar, tt.flag...)...)
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%q: %v, want %q", tt.flag, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || !strings.Contains(out, tt.want)):
			t.Errorf("%q: %v, bootstrap lacks %q:\n%s", tt.flag, err, tt.want, out)
		}
	}
}
