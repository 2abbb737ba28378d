package attestor

import (
	"strings"
	"testing"
)

func TestParseSelector(t *testing.T) {
	tests := []struct {
		in      string
		want    Selector
		wantErr string
	}{
		{in: "unix:uid:1001", want: Selector{"unix", "uid:1001"}},
		{in: "unix:gid:0", want: Selector{"unix", "gid:0"}},
		{in: "unix:path:/usr/local/bin/envoy", want: Selector{"unix", "path:/usr/local/bin/envoy"}},
		{in: "unix:path:/opt/a:b", want: Selector{"unix", "path:/opt/a:b"}},
		{in: "unix:uid", wantErr: "has no value"},
		{in: "unix:uid:", wantErr: "has no value"},
		{in: "unix:uid:alice", wantErr: "not a numeric id"},
		{in: "unix:uid:-1", wantErr: "not a numeric id"},
		{in: "unix:path:relative/envoy", wantErr: "not an absolute path"},
		{in: "unix:shell:/bin/sh", wantErr: `unknown unix key "shell" (supported: gid, path, uid)`},
		{in: "docker:label:app:web", wantErr: `unknown type "docker"`},
		{in: "uid1001", wantErr: "want type:key:value"},
		{in: "", wantErr: "want type:key:value"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSelector(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseSelector(%q) error = %v, want %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSelector(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
		})
	}
}
