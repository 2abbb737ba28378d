package attestor

import (
	"strings"
	"testing"
)

func TestParseSelector(t *testing.T) {
	const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	tests := []struct {
		in      string
		want    Selector
		wantErr string
	}{
		{in: "unix:uid:1001", want: Selector{"unix", "uid:1001"}},
		{in: "unix:gid:0", want: Selector{"unix", "gid:0"}},
		{in: "unix:user:envoy", want: Selector{"unix", "user:envoy"}},
		{in: "unix:group:mesh", want: Selector{"unix", "group:mesh"}},
		{in: "unix:supplementary_gid:27", want: Selector{"unix", "supplementary_gid:27"}},
		{in: "unix:path:/usr/local/bin/envoy", want: Selector{"unix", "path:/usr/local/bin/envoy"}},
		{in: "unix:path:/opt/a:b", want: Selector{"unix", "path:/opt/a:b"}},
		{in: "unix:sha256:" + hex64, want: Selector{"unix", "sha256:" + hex64}},
		{in: "docker:label:app:web", want: Selector{"docker", "label:app:web"}},
		{in: "docker:label:com.example/tier:", want: Selector{"docker", "label:com.example/tier:"}},
		{in: "docker:env:MODE=prod", want: Selector{"docker", "env:MODE=prod"}},
		{in: "docker:image_id:nginx:1.27", want: Selector{"docker", "image_id:nginx:1.27"}},
		{in: "docker:image_config_digest:sha256:" + hex64, want: Selector{"docker", "image_config_digest:sha256:" + hex64}},
		{in: "k8s:ns:default", want: Selector{"k8s", "ns:default"}},
		{in: "k8s:sa:frontend", want: Selector{"k8s", "sa:frontend"}},
		{in: "k8s:pod-label:app:web", want: Selector{"k8s", "pod-label:app:web"}},
		{in: "k8s:pod-uid:2c48913c-b29f-11e7-9350-020968147796", want: Selector{"k8s", "pod-uid:2c48913c-b29f-11e7-9350-020968147796"}},
		{in: "k8s:container-image:docker.io/envoyproxy/envoy:v1.40", want: Selector{"k8s", "container-image:docker.io/envoyproxy/envoy:v1.40"}},
		{in: "k8s:node-name:node-1", want: Selector{"k8s", "node-name:node-1"}},
		{in: "unix:uid", wantErr: "has no value"},
		{in: "unix:uid:", wantErr: "has no value"},
		{in: "unix:uid:alice", wantErr: "not a numeric id"},
		{in: "unix:uid:-1", wantErr: "not a numeric id"},
		{in: "unix:uid:4294967296", wantErr: "not a numeric id"},
		{in: "unix:path:relative/envoy", wantErr: "not an absolute path"},
		{in: "unix:sha256:ABC", wantErr: "not 64 lowercase hex digits"},
		{in: "unix:user: ", wantErr: "blank"},
		{in: "unix:user:a\x00b", wantErr: "control characters"},
		{in: "unix:shell:/bin/sh", wantErr: `unknown unix key "shell" (supported: gid, group, path, sha256, supplementary_gid, uid, user)`},
		{in: "docker:label:app", wantErr: "want KEY:VALUE"},
		{in: "docker:label::web", wantErr: "want KEY:VALUE"},
		{in: "docker:env:MODE", wantErr: "want KEY=VALUE"},
		{in: "docker:image_config_digest:" + hex64, wantErr: "not sha256:"},
		{in: "k8s:pod-uid:nope", wantErr: "not a pod UID"},
		{in: "k8s:namespace:default", wantErr: `unknown k8s key "namespace"`},
		{in: "nsa:clearance:top", wantErr: `unknown type "nsa" (supported: docker, k8s, unix)`},
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

func TestSelectorExclusive(t *testing.T) {
	tests := []struct {
		in    string
		group string
		ok    bool
	}{
		{"unix:uid:1", "unix:uid", true},
		{"unix:path:/a:b", "unix:path", true},
		{"unix:supplementary_gid:5", "", false},
		{"docker:label:app:web", "docker:label:app", true},
		{"docker:env:A=b:c", "docker:env:A", true},
		{"k8s:pod-label:tier:db", "k8s:pod-label:tier", true},
		{"k8s:ns:prod", "k8s:ns", true},
	}
	for _, tt := range tests {
		s, err := ParseSelector(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if g, ok := s.Exclusive(); g != tt.group || ok != tt.ok {
			t.Errorf("%s.Exclusive() = %q, %v; want %q, %v", tt.in, g, ok, tt.group, tt.ok)
		}
	}
}

// FuzzParseSelector: any input either parses into a selector that prints
// back as the input, or fails with an error naming it; never a panic.
func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"unix:uid:1001", "docker:label:a:b", "k8s:pod-label:x:", "unix:path:/a:b", "::", "unix::", "k8s:pod-uid:2c48913c-b29f-11e7-9350-020968147796"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSelector(in)
		if err != nil {
			if !strings.Contains(err.Error(), "selector") {
				t.Fatalf("error %q does not say it is about a selector", err)
			}
			return
		}
		if s.String() != in {
			t.Fatalf("ParseSelector(%q).String() = %q", in, s.String())
		}
		s.Exclusive()
	})
}

func TestParseGroupAndGroupValue(t *testing.T) {
	for _, g := range []string{"unix:uid", "k8s:ns", "docker:label:com.docker.compose.service", "docker:env:ROLE", "k8s:pod-label:app"} {
		if err := ParseGroup(g); err != nil {
			t.Errorf("ParseGroup(%q) = %v", g, err)
		}
	}
	for _, g := range []string{"", "unix", "unix:", "unix:supplementary_gid", "docker:label", "docker:label:", "docker:label:a:b", "k8s:ns:x", "nope:x"} {
		if err := ParseGroup(g); err == nil {
			t.Errorf("ParseGroup(%q) accepted", g)
		}
	}
	for in, want := range map[string]string{"docker:label:app:web": "web", "docker:env:ROLE=db=x": "db=x", "unix:uid:7": "7", "k8s:pod-label:a:b:c": "b:c"} {
		s, err := ParseSelector(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.GroupValue(); got != want {
			t.Errorf("%s: GroupValue = %q, want %q", in, got, want)
		}
	}
}
