package endpoint

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func TestParse(t *testing.T) {
	tests := []struct {
		value    string
		wantPath string
		wantErr  string
	}{
		{"/run/meshid/agent.sock", "/run/meshid/agent.sock", ""},
		{"unix:///run/meshid/agent.sock", "/run/meshid/agent.sock", ""},
		{"unix:/run/meshid/agent.sock", "/run/meshid/agent.sock", ""},
		{"agent.sock", "", "a relative path"},
		{"unix://run/meshid/agent.sock", "", `"run" is read as a host; a unix URI has three slashes`},
		{"unix:agent.sock", "", "no absolute path"},
		{"tcp://127.0.0.1:8081", "", `scheme "tcp": meshid serves the Workload API on a Unix socket only`},
		{"unix:///run/agent.sock?x=1", "", "nothing but a path"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			e, err := Parse(tt.value, FromFlag)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) = %v, %v; want error with %q", tt.value, e, err, tt.wantErr)
				}
				// The error says where the value came from and what it
				// should look like.
				if want := `-socket "` + tt.value + `": `; !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "want /path/to/agent.sock or unix:///path/to/agent.sock") {
					t.Fatalf("error %q, want it to start with %q and show both forms", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.Path() != tt.wantPath || e.Addr() != "unix://"+tt.wantPath {
				t.Fatalf("Parse(%q) = path %q addr %q", tt.value, e.Path(), e.Addr())
			}
			if err := workloadapi.ValidateAddress(e.Addr()); err != nil {
				t.Fatalf("go-spiffe refuses %q: %v", e.Addr(), err)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		name, flag, env string
		wantAddr        string
		wantSource      Source
		wantErr         string
	}{
		{"default", "", "", "unix:///run/meshid/agent.sock", FromDefault, ""},
		{"env", "", "unix:///env/agent.sock", "unix:///env/agent.sock", FromEnv, ""},
		{"env as a plain path", "", "/env/agent.sock", "unix:///env/agent.sock", FromEnv, ""},
		{"flag wins over env", "/flag/agent.sock", "unix:///env/agent.sock", "unix:///flag/agent.sock", FromFlag, ""},
		{"bad env is named", "", "tcp://127.0.0.1:1", "", FromEnv, `$SPIFFE_ENDPOINT_SOCKET "tcp://127.0.0.1:1": scheme "tcp"`},
		{"bad flag is named", "sock", "", "", FromFlag, `-socket "sock": a relative path`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(workloadapi.SocketEnv, tt.env)
			e, err := Resolve(tt.flag)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Resolve = %v, %v; want error with %q", e, err, tt.wantErr)
				}
				return
			}
			if err != nil || e.Addr() != tt.wantAddr || e.Source() != tt.wantSource {
				t.Fatalf("Resolve = %s from %s, %v; want %s from %s", e, e.Source(), err, tt.wantAddr, tt.wantSource)
			}
		})
	}
}
