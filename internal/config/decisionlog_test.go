package config

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadDecisionLogForms(t *testing.T) {
	tests := []struct {
		name, body string
		want       func(dir string) DecisionLog
	}{
		{"scalar file", "authz:\n  decision_log: logs/d.jsonl\n", func(dir string) DecisionLog {
			return DecisionLog{File: filepath.Join(dir, "logs/d.jsonl")}
		}},
		{"scalar stderr", "authz:\n  decision_log: stderr\n", func(string) DecisionLog { return DecisionLog{File: "stderr"} }},
		{"null", "authz:\n  decision_log:\n", func(string) DecisionLog { return DecisionLog{} }},
		{"mapping, file only", "authz:\n  decision_log:\n    file: d.jsonl\n", func(dir string) DecisionLog {
			return DecisionLog{File: filepath.Join(dir, "d.jsonl")}
		}},
		{"mapping, service defaults", "authz:\n  decision_log:\n    service:\n      url: https://collector.example:8443\n", func(string) DecisionLog {
			s := defaultDecisionLogService()
			s.URL = "https://collector.example:8443"
			return DecisionLog{Service: &s}
		}},
		{"mapping, every key", `authz:
  decision_log:
    file: stderr
    service:
      url: https://collector.example:8443/v1
      ca_file: ca.pem
      bearer_token_file: token
      timeout: 3s
      resource: /decisions
      min_delay: 200ms
      max_delay: 2s
      upload_size_limit_bytes: 4096
      buffer_size_limit_bytes: 65536
      labels: {region: eu}
`, func(dir string) DecisionLog {
			return DecisionLog{File: "stderr", Service: &DecisionLogService{
				Service:  Service{URL: "https://collector.example:8443/v1", CAFile: filepath.Join(dir, "ca.pem"), BearerTokenFile: filepath.Join(dir, "token"), Timeout: 3 * time.Second},
				Resource: "/decisions", MinDelay: 200 * time.Millisecond, MaxDelay: 2 * time.Second,
				UploadSizeLimitBytes: 4096, BufferSizeLimitBytes: 65536, Labels: map[string]string{"region": "eu"},
			}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.body)
			cfg, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want(filepath.Dir(path))
			if got := cfg.Authz.DecisionLog; !reflect.DeepEqual(got, want) {
				t.Errorf("decision_log = %+v (service %+v), want %+v (service %+v)", got, got.Service, want, want.Service)
			}
			if got := cfg.Authz.DecisionLog.Enabled(); got != (tt.name != "null") {
				t.Errorf("Enabled() = %v", got)
			}
		})
	}
}

func TestLoadDecisionLogRejects(t *testing.T) {
	svc := "authz:\n  decision_log:\n    service:\n      url: https://c.example\n"
	tests := []struct {
		name, body string
		want       []string
	}{
		{"a list", "authz:\n  decision_log: [a, b]\n", []string{"meshid.yaml:2: authz.decision_log: want stderr, a file path, or a mapping with file and service"}},
		{"unknown key", "authz:\n  decision_log:\n    path: d.jsonl\n", []string{`meshid.yaml:3: unknown key "path"`}},
		{"unknown service key", svc + "      min_delay_seconds: 5\n", []string{`meshid.yaml:5: unknown key "min_delay_seconds"`}},
		{"unknown client_tls key", svc + "      client_tls: {cert: c.pem}\n", []string{`meshid.yaml:5: unknown key "cert"`}},
		{"type error keeps its line", svc + "      min_delay: soon\n", []string{"meshid.yaml:5:"}},
		{"no url", "authz:\n  decision_log:\n    service:\n      resource: /logs\n", []string{"meshid.yaml:3: authz.decision_log.service.url is required"}},
		{"token over http", "authz:\n  decision_log:\n    service:\n      url: http://c.example\n      bearer_token_file: t\n", []string{"meshid.yaml:5: authz.decision_log.service.bearer_token_file: the token would cross the network in the clear"}},
		{"resource", svc + "      resource: logs\n", []string{`meshid.yaml:5: authz.decision_log.service.resource "logs": want a path starting with /`}},
		{"min delay", svc + "      min_delay: 1ms\n", []string{"meshid.yaml:5: authz.decision_log.service.min_delay 1ms: want at least 100ms"}},
		{"max delay", svc + "      min_delay: 5s\n      max_delay: 1s\n", []string{"meshid.yaml:6: authz.decision_log.service.max_delay 1s is shorter than min_delay 5s"}},
		{"upload size", svc + "      upload_size_limit_bytes: 100\n", []string{"meshid.yaml:5: authz.decision_log.service.upload_size_limit_bytes 100: want at least 1024"}},
		{"buffer size", svc + "      buffer_size_limit_bytes: 1000\n", []string{"meshid.yaml:5: authz.decision_log.service.buffer_size_limit_bytes 1000 is less than upload_size_limit_bytes 32768"}},
		{"reserved label", svc + "      labels:\n        id: n1\n", []string{"meshid.yaml:6: authz.decision_log.service.labels.id is meshid's to set"}},
		{"several at once", svc + "      resource: x\n      min_delay: 1ms\n", []string{"meshid.yaml:5: authz.decision_log.service.resource", "meshid.yaml:6: authz.decision_log.service.min_delay"}},
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
