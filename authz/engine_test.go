package authz_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/authz"
)

func TestNewEngineRejects(t *testing.T) {
	const good = "package envoy.authz\n\ndefault allow := false\n"
	tests := []struct {
		name  string
		files map[string]string // nil: the dir does not exist
		cfg   authz.Config
		want  []string // substrings of the error, {dir} replaced
	}{
		{
			name: "missing dir",
			want: []string{"policy dir", "no such file or directory"},
		},
		{
			name:  "empty dir",
			files: map[string]string{},
			want:  []string{"holds no .rego files"},
		},
		{
			name:  "no rego files",
			files: map[string]string{"README.md": "# policies\n", "data.txt": "x"},
			want:  []string{"holds no .rego files"},
		},
		{
			name:  "parse error names file line and column",
			files: map[string]string{"authz.rego": "package envoy.authz\n\ndefault allow := false\n\nallow if {\n\tinput.x ==\n}\n"},
			want:  []string{"do not parse", "{dir}/authz.rego:7:1: rego_parse_error:"},
		},
		{
			name:  "v0 syntax is a parse error",
			files: map[string]string{"authz.rego": "package envoy.authz\n\nallow {\n  true\n}\n"},
			want:  []string{"{dir}/authz.rego:3:", "rego_parse_error"},
		},
		{
			name: "every bad file is reported",
			files: map[string]string{
				"a.rego":       "package a\n\nx if {\n",
				"sub/b.rego":   "package b\n\ny := \n",
				"envoy.rego":   good,
				"sub/ok.rego":  "package ok\n\nz := 1\n",
				"sub/readme":   "not rego",
				"sub/c.rego.x": "not rego either",
			},
			want: []string{"{dir}/a.rego:", "{dir}/sub/b.rego:4:", "rego_parse_error"},
		},
		{
			name:  "compile error names file line and column",
			files: map[string]string{"authz.rego": "package envoy.authz\n\ndefault allow := false\n\nallow if {\n\tinput.x == y\n}\n"},
			want:  []string{"do not compile", "{dir}/authz.rego:6:2: rego_unsafe_var_error: var y is unsafe"},
		},
		{
			name:  "type error",
			files: map[string]string{"authz.rego": "package envoy.authz\n\nallow if {\n\tcount(1) > 0\n}\n"},
			want:  []string{"{dir}/authz.rego:4:2: rego_type_error"},
		},
		{
			name:  "decision defined nowhere",
			files: map[string]string{"authz.rego": "package envoy.authz\n\ndefault allowed := false\n"},
			want:  []string{"decision data.envoy.authz.allow is not defined by any rule in {dir}"},
		},
		{
			name:  "configured decision defined nowhere",
			files: map[string]string{"authz.rego": good},
			cfg:   authz.Config{Decision: "data.istio.authz.allow"},
			want:  []string{"decision data.istio.authz.allow is not defined"},
		},
		{
			name:  "decision outside data",
			files: map[string]string{"authz.rego": good},
			cfg:   authz.Config{Decision: "input.allow"},
			want:  []string{`decision "input.allow": want a reference into data`},
		},
		{
			name:  "decision not a reference",
			files: map[string]string{"authz.rego": good},
			cfg:   authz.Config{Decision: "envoy/authz/allow"},
			want:  []string{`decision "envoy/authz/allow"`},
		},
		{
			name:  "negative timeout",
			files: map[string]string{"authz.rego": good},
			cfg:   authz.Config{EvalTimeout: -time.Second},
			want:  []string{"eval timeout -1s: must be positive"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			if tt.files == nil {
				cfg.PolicyDir = filepath.Join(t.TempDir(), "nope")
			} else {
				cfg.PolicyDir = writeFiles(t, tt.files)
			}
			e, err := authz.NewEngine(context.Background(), cfg)
			if err == nil {
				t.Fatalf("NewEngine = %v, want an error", e)
			}
			for _, w := range tt.want {
				w = strings.ReplaceAll(w, "{dir}", cfg.PolicyDir)
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestNewEngineLoadsTree(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		// The rule and the helper it needs live in different directories.
		"envoy/authz.rego":      "package envoy.authz\n\nimport data.lib\n\ndefault allow := false\n\nallow if lib.is_get\n",
		"lib/http.rego":         "package lib\n\nis_get if input.attributes.request.http.method == \"GET\"\n",
		"envoy/authz_test.rego": "package envoy.authz_test\n\nimport data.envoy.authz\n\ntest_get if authz.allow with input.attributes.request.http.method as \"GET\"\n",
		// Hidden files and dirs are skipped, as in a ConfigMap mount.
		"..2024_01_01/authz.rego": "package envoy.authz\n\nallow := \"duplicate\"\n",
		".broken.rego":            "this is not rego",
		"notes.txt":               "ignored",
	})
	e, err := authz.NewEngine(context.Background(), authz.Config{PolicyDir: dir})
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	for method, want := range map[string]bool{"GET": true, "POST": false} {
		got, err := decide(t, e, checkRequest(frontend, backend, method, "/"))
		if err != nil || got != want {
			t.Errorf("Decide(%s) = %v, %v; want %v, nil", method, got, err, want)
		}
	}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name     string
		policy   string
		decision string
		timeout  time.Duration
		want     bool
		wantErr  string // "" means no error
	}{
		{
			name:   "allow",
			policy: "package envoy.authz\n\nallow if input.spiffe.source.id == \"" + frontend + "\"\n",
			want:   true,
		},
		{
			name:   "deny by default",
			policy: "package envoy.authz\n\ndefault allow := false\n\nallow if input.spiffe.source.id == \"spiffe://example.org/other\"\n",
			want:   false,
		},
		{
			name:    "undefined",
			policy:  "package envoy.authz\n\nallow if input.attributes.request.http.method == \"DELETE\"\n",
			wantErr: "decision data.envoy.authz.allow is undefined for this request",
		},
		{
			name:    "string result",
			policy:  "package envoy.authz\n\nallow := \"yes\"\n",
			wantErr: "decision data.envoy.authz.allow is a string, want a boolean",
		},
		{
			name:    "number result",
			policy:  "package envoy.authz\n\nallow := 1\n",
			wantErr: "is a number",
		},
		{
			name:    "null result",
			policy:  "package envoy.authz\n\nallow := null\n",
			wantErr: "is a null",
		},
		{
			name:    "conflicting values",
			policy:  "package envoy.authz\n\nallow if input.attributes.request.http.method == \"GET\"\n\nallow := false if input.attributes.request.http.path == \"/hello\"\n",
			wantErr: "eval_conflict_error",
		},
		{
			// OPA's default: a failing builtin makes its expression
			// undefined, as in OPA-Envoy; the deny comes from the default.
			name:   "division by zero",
			policy: "package envoy.authz\n\ndefault allow := false\n\nallow if {\n\tx := 1 / count(input.parsed_query)\n\tx > 0\n}\n",
			want:   false,
		},
		{
			name:    "division by zero without default",
			policy:  "package envoy.authz\n\nallow if {\n\tx := 1 / count(input.parsed_query)\n\tx > 0\n}\n",
			wantErr: "undefined",
		},
		{
			name:    "timeout",
			policy:  slowPolicy,
			timeout: 20 * time.Millisecond,
			wantErr: "not decided within the eval timeout (20ms)",
		},
		{
			name:   "object allowed",
			policy: "package envoy.authz\n\nallow := {\"allowed\": true}\n",
			want:   true,
		},
		{
			name:   "object denied with extras",
			policy: "package envoy.authz\n\nallow := {\"allowed\": false, \"http_status\": 401, \"body\": \"go away\"}\n",
			want:   false,
		},
		{
			name:   "object allowed with headers",
			policy: "package envoy.authz\n\nallow := {\"allowed\": true, \"request_headers_to_remove\": [\"x-user\"], \"headers\": {\"x-a\": \"b\"}}\n",
			want:   true,
		},
		{
			name:    "object without allowed",
			policy:  "package envoy.authz\n\nallow := {\"http_status\": 200}\n",
			wantErr: "decision data.envoy.authz.allow is an object without an \"allowed\" field",
		},
		{
			name:    "object with non-boolean allowed",
			policy:  "package envoy.authz\n\nallow := {\"allowed\": \"true\"}\n",
			wantErr: "decision data.envoy.authz.allow has an \"allowed\" that is a string, want a boolean",
		},
		{
			name:     "configured decision",
			policy:   "package mesh\n\nok if input.attributes.request.http.method == \"GET\"\n",
			decision: "data.mesh.ok",
			want:     true,
		},
		{
			name:     "package as decision",
			policy:   "package mesh\n\nallowed := true\n",
			decision: "data.mesh",
			want:     true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := engine(t, tt.policy, authz.Config{Decision: tt.decision, EvalTimeout: tt.timeout})
			start := time.Now()
			got, err := decide(t, e, checkRequest(frontend, backend, "GET", "/hello"))
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("Decide took %v", took)
			}
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("Decide = %v, %v; want %v, nil", got, err, tt.want)
				}
				return
			}
			if got {
				t.Errorf("Decide allowed although it failed: %v", err)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Decide error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}
