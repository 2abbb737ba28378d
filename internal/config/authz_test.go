package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAuthzDefaults(t *testing.T) {
	a := Default().Authz
	if a.RegoVersion != "v1" || a.InputEncoding != "protomap" || a.DenyStatus != 403 || a.EvalTimeout != 100*time.Millisecond || a.ReloadInterval != 10*time.Second ||
		a.DecisionLog.Enabled() || a.DecisionLogQueue != 1024 || a.DecisionLogSampleRate != 1 || a.DryRun || a.XFCC.Trust || a.HTTPAddress != "" ||
		!slices.Equal(a.DecisionLogMask, []string{"authorization", "proxy-authorization", "cookie"}) ||
		a.MaxBodyBytes != 1<<20 || a.MaxBodyDepth != 64 || a.MaxBodyValues != 10000 ||
		a.DecisionLogMaxFieldBytes != 8192 || a.DecisionLogMaxInputBytes != 65536 || a.DecisionLogMaxBytes != 100<<20 || a.DecisionLogMaxFiles != 5 {
		t.Errorf("authz defaults = %+v", a)
	}
}

func TestLoadAuthz(t *testing.T) {
	path := writeConfig(t, `authz:
  address: unix:///run/meshid/authz.sock
  http_address: 127.0.0.1:9192
  reflection: true
  policy_dir: pol
  decision: data.mesh.allow
  rego_version: v0
  input_encoding: protojson
  eval_timeout: 50ms
  reload_interval: 0s
  deny_status: 401
  dry_run: true
  decision_log: logs/decisions.jsonl
  decision_log_mask: []
  decision_log_queue: 10
  decision_log_sample_rate: 0.5
  decision_log_max_field_bytes: 100
  decision_log_max_input_bytes: 1000
  decision_log_max_bytes: 2097152
  decision_log_max_files: 2
  max_body_bytes: 4096
  max_body_depth: 8
  max_body_values: 50
  jwt_audiences: [backend]
  proto_descriptor: protos/api.pb
  xfcc: {trust: true, proxies: ["spiffe://example.org/gateway"]}
  tls:
    spiffe_id: spiffe://example.org/meshid/authz
    client_ids: [spiffe://example.org/ns/demo/sa/backend]
`)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	a := cfg.Authz
	if a.Address != "unix:///run/meshid/authz.sock" || a.HTTPAddress != "127.0.0.1:9192" || !a.Reflection ||
		a.PolicyDir != filepath.Join(dir, "pol") || a.Decision != "data.mesh.allow" || a.RegoVersion != "v0" || a.InputEncoding != "protojson" ||
		a.EvalTimeout != 50*time.Millisecond || a.ReloadInterval != 0 || a.DenyStatus != 401 || !a.DryRun ||
		a.DecisionLog != (DecisionLog{File: filepath.Join(dir, "logs/decisions.jsonl")}) || a.DecisionLogMask == nil || len(a.DecisionLogMask) != 0 ||
		a.DecisionLogQueue != 10 || a.DecisionLogSampleRate != 0.5 || !slices.Equal(a.JWTAudiences, []string{"backend"}) ||
		a.DecisionLogMaxFieldBytes != 100 || a.DecisionLogMaxInputBytes != 1000 || a.DecisionLogMaxBytes != 2<<20 || a.DecisionLogMaxFiles != 2 ||
		a.MaxBodyBytes != 4096 || a.MaxBodyDepth != 8 || a.MaxBodyValues != 50 ||
		!a.XFCC.Trust || !slices.Equal(a.XFCC.Proxies, []string{"spiffe://example.org/gateway"}) ||
		a.ProtoDescriptor != filepath.Join(dir, "protos/api.pb") ||
		a.TLS.SPIFFEID != "spiffe://example.org/meshid/authz" || !slices.Equal(a.TLS.ClientIDs, []string{"spiffe://example.org/ns/demo/sa/backend"}) {
		t.Errorf("authz = %+v", a)
	}
}

func TestLoadAuthzStderrIsNotAPath(t *testing.T) {
	cfg, err := Load(writeConfig(t, "authz: {decision_log: stderr}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Authz.DecisionLog != (DecisionLog{File: DecisionLogStderr}) {
		t.Errorf("decision_log = %+v, want stderr", cfg.Authz.DecisionLog)
	}
}

func TestLoadAuthzRejects(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string
	}{
		{"relative unix socket", "authz:\n  address: unix://authz.sock\n", []string{`meshid.yaml:2: authz.address: "unix://authz.sock": want unix:///absolute/path`}},
		{"bad http address", "authz:\n  http_address: 9192\n", []string{"meshid.yaml:2: authz.http_address:"}},
		{"same address twice", "authz:\n  address: 127.0.0.1:9191\n  http_address: 127.0.0.1:9191\n", []string{"meshid.yaml:3: authz.http_address 127.0.0.1:9191 is authz.address too"}},
		{"rego version", "authz:\n  rego_version: v2\n", []string{`meshid.yaml:2: authz.rego_version "v2": want v1 or v0`}},
		{"input encoding", "authz:\n  input_encoding: json\n", []string{`meshid.yaml:2: authz.input_encoding "json": want protomap (the current OPA-Envoy plugin's) or protojson (older plugins')`}},
		{"short reload interval", "authz:\n  reload_interval: 10ms\n", []string{"meshid.yaml:2: authz.reload_interval 10ms: want 0 (watch only) or at least 1s"}},
		{"deny status 200", "authz:\n  deny_status: 200\n", []string{"meshid.yaml:2: authz.deny_status 200: want a 3xx, 4xx or 5xx"}},
		{"unbounded cache", "authz:\n  cache:\n    max_entries: 0\n    max_bytes: 0\n", []string{"meshid.yaml:2: authz.cache is enabled without a bound"}},
		{"negative cache bound", "authz:\n  cache:\n    max_bytes: -1\n", []string{"meshid.yaml:3: authz.cache.max_bytes -1: want 0"}},
		{"queue", "authz:\n  decision_log_queue: 0\n", []string{"meshid.yaml:2: authz.decision_log_queue 0 must be at least 1"}},
		{"sample rate", "authz:\n  decision_log_sample_rate: 2\n", []string{"meshid.yaml:2: authz.decision_log_sample_rate 2: want a fraction in (0, 1]"}},
		{"mask case", "authz:\n  decision_log_mask: [authorization, X-Token]\n", []string{`meshid.yaml:2: authz.decision_log_mask: "X-Token": want a lower-case header name`}},
		{"empty audience", "authz:\n  jwt_audiences:\n    - a\n    - \"\"\n", []string{"meshid.yaml:4: authz.jwt_audiences: an audience must not be empty"}},
		{"proxies without trust", "authz:\n  xfcc:\n    proxies: [\"spiffe://example.org/gw\"]\n", []string{"meshid.yaml:3: authz.xfcc.proxies is set but authz.xfcc.trust is false"}},
		{"proxy not a SPIFFE ID", "authz:\n  xfcc:\n    trust: true\n    proxies:\n      - gateway\n", []string{`meshid.yaml:5: authz.xfcc.proxies: "gateway" is not a SPIFFE ID`}},
		{"unknown xfcc key", "authz:\n  xfcc:\n    trusted: true\n", []string{`meshid.yaml:3: unknown key "trusted"`}},
		{"body bytes", "authz:\n  max_body_bytes: 0\n", []string{"meshid.yaml:2: authz.max_body_bytes 0 must be at least 1"}},
		{"body depth", "authz:\n  max_body_depth: 1\n", []string{"meshid.yaml:2: authz.max_body_depth 1: want 2 to 1000"}},
		{"body too deep", "authz:\n  max_body_depth: 100000\n", []string{"meshid.yaml:2: authz.max_body_depth 100000: want 2 to 1000"}},
		{"body values", "authz:\n  max_body_values: -1\n", []string{"meshid.yaml:2: authz.max_body_values -1 must be at least 1"}},
		{"log field", "authz:\n  decision_log_max_field_bytes: 10\n", []string{"meshid.yaml:2: authz.decision_log_max_field_bytes 10 must be at least 64"}},
		{"log input", "authz:\n  decision_log_max_field_bytes: 1000\n  decision_log_max_input_bytes: 999\n", []string{"meshid.yaml:3: authz.decision_log_max_input_bytes 999 is less than authz.decision_log_max_field_bytes 1000"}},
		{"log explain", "authz:\n  decision_log_explain: all\n", []string{`meshid.yaml:2: authz.decision_log_explain "all": want deny (explain denials) or nothing`}},
		{"log file size", "authz:\n  decision_log_max_bytes: 1000\n", []string{"meshid.yaml:2: authz.decision_log_max_bytes 1000: want 0 (never rotate) or at least 1048576"}},
		{"log files", "authz:\n  decision_log_max_files: 0\n", []string{"meshid.yaml:2: authz.decision_log_max_files 0 must be at least 1"}},
		{"negative timeout", "authz:\n  eval_timeout: -1s\n", []string{"meshid.yaml:2: authz.eval_timeout must be positive"}},
		{"tls id not SPIFFE", "authz:\n  tls:\n    spiffe_id: meshid\n", []string{`meshid.yaml:3: authz.tls.spiffe_id "meshid" is not a SPIFFE ID`}},
		{"tls id elsewhere", "authz:\n  tls:\n    spiffe_id: spiffe://other.org/meshid\n", []string{`meshid.yaml:3: authz.tls.spiffe_id "spiffe://other.org/meshid" is outside the trust domain "example.org"`}},
		{"tls clients without id", "authz:\n  tls:\n    client_ids: [spiffe://example.org/a]\n", []string{"meshid.yaml:3: authz.tls.client_ids is set but authz.tls.spiffe_id is empty"}},
		{"tls client elsewhere", "authz:\n  tls:\n    spiffe_id: spiffe://example.org/meshid\n    client_ids:\n      - spiffe://example.org/a\n      - spiffe://other.org/b\n", []string{`meshid.yaml:6: authz.tls.client_ids: "spiffe://other.org/b" is outside the trust domain`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, tt.body))
			if err == nil {
				t.Fatal("Load accepted bad config")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestLoadAuthzNoRotation: decision_log_max_bytes 0 never rotates, and
// then needs no files to keep.
func TestLoadAuthzNoRotation(t *testing.T) {
	cfg, err := Load(writeConfig(t, "authz: {decision_log_max_bytes: 0, decision_log_max_files: 0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Authz.DecisionLogMaxBytes != 0 {
		t.Errorf("decision_log_max_bytes = %d, want 0", cfg.Authz.DecisionLogMaxBytes)
	}
}
