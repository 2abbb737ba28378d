package workloadcli

import (
	"bytes"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"
)

// parseWatchFlags reads svid watch's command line as the command does.
// The single-dash spellings (-write, -cmd PROG) are cmd/meshid's to
// rewrite before this and are tested there; "--" is where -cmd ends up.
func parseWatchFlags(args []string, stderr io.Writer) (watchConfig, error) {
	cmd, f := svidWatchCmd()
	cmd.SetErr(stderr)
	if err := cmd.ParseFlags(args); err != nil {
		return watchConfig{}, err
	}
	return f.config(cmd, cmd.Flags().Args())
}

func TestParseWatchFlags(t *testing.T) {
	var stderr bytes.Buffer
	cfg, err := parseWatchFlags([]string{"--socket", "unix:///s.sock", "--write", "/d", "--renew-signal", "usr1", "--jwt-audience", "a", "--jwt-audience", "b",
		"--", "nginx", "-g", "daemon off;"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.helper
	if h.RenewSignal != syscall.SIGUSR1 || strings.Join(h.Cmd, "|") != "nginx|-g|daemon off;" || h.UnreachableTimeout != 30*time.Second ||
		cfg.endpoint.Path() != "/s.sock" || h.Files.Dir != "/d" || h.Files.Cert != "svid.pem" || h.Files.Key != "svid_key.pem" ||
		h.Files.Bundle != "bundle.pem" || h.Files.JWT != "jwt_svid.token" || strings.Join(h.JWTAudiences, ",") != "a,b" || h.JWTTimeout != 10*time.Second {
		t.Fatalf("%+v", cfg)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"--socket", "unix:///s"}, "-write DIR is required"},
		{[]string{"--write", "/d", "--renew-signal", "SIGNOPE"}, "not a signal name"},
		{[]string{"--write", "/d", "--"}, "-cmd needs a program"},
		{[]string{"--write", "/d", "prog"}, "program arguments go after -cmd PROG"},
		{[]string{"--write", "/d", "--socket", "unix://s.sock"}, `-socket "unix://s.sock": "s.sock" is read as a host`},
	} {
		if _, err := parseWatchFlags(bad.args, &stderr); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: %v, want %q", bad.args, err, bad.want)
		}
	}
	if _, err := parseSignal("HUP"); err != nil {
		t.Error(err)
	}
}
