package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadBundles(t *testing.T) {
	path := writeConfig(t, `authz:
  bundles:
    - name: mesh
      service:
        url: https://bundles.example:8443
        ca_file: ca.pem
        bearer_token_file: token
      resource: bundles/mesh.tar.gz
      polling: {min_delay: 5s, max_delay: 7s, long_polling_timeout: 30s}
      size_limit_bytes: 1048576
      signing: {key_id: global, algorithm: ES256, public_key_file: keys/bundle.pub, scope: write}
    - name: extra
      service: {url: http://127.0.0.1:8888}
      unsigned: true
`)
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	a := cfg.Authz
	if a.PolicyDir != "" {
		t.Errorf("policy_dir = %q: with bundles and no policy_dir, want none", a.PolicyDir)
	}
	if len(a.Bundles) != 2 {
		t.Fatalf("bundles = %+v", a.Bundles)
	}
	m, e := a.Bundles[0], a.Bundles[1]
	if m.Name != "mesh" || m.Service.URL != "https://bundles.example:8443" || m.Service.CAFile != filepath.Join(dir, "ca.pem") ||
		m.Service.BearerTokenFile != filepath.Join(dir, "token") || m.Service.Timeout != DefaultServiceTimeout ||
		m.Resource != "bundles/mesh.tar.gz" || m.Polling != (BundlePolling{5 * time.Second, 7 * time.Second, 30 * time.Second}) ||
		m.SizeLimitBytes != 1<<20 || m.Unsigned ||
		*m.Signing != (BundleSigning{KeyID: "global", Algorithm: "ES256", PublicKeyFile: filepath.Join(dir, "keys/bundle.pub"), Scope: "write"}) {
		t.Errorf("bundle mesh = %+v %+v", m, m.Signing)
	}
	for _, tc := range []struct {
		polling    string
		minD, maxD time.Duration
	}{
		{"{max_delay: 5s}", 5 * time.Second, 5 * time.Second},
		{"{max_delay: 60s}", DefaultBundleMinDelay, 60 * time.Second},
		{"{min_delay: 30s}", 30 * time.Second, 30 * time.Second},
		{"{min_delay: 2s}", 2 * time.Second, DefaultBundleMaxDelay},
	} {
		cfg, err := Load(writeConfig(t, "authz:\n  bundles:\n    - name: a\n      service: {url: https://b.example}\n      unsigned: true\n      polling: "+tc.polling+"\n"))
		if err != nil {
			t.Errorf("polling %s: %v", tc.polling, err)
			continue
		}
		if p := cfg.Authz.Bundles[0].Polling; p.MinDelay != tc.minD || p.MaxDelay != tc.maxD {
			t.Errorf("polling %s: min_delay %s, max_delay %s, want %s, %s", tc.polling, p.MinDelay, p.MaxDelay, tc.minD, tc.maxD)
		}
	}
	if e.Resource != "bundles/extra" || e.Polling != (BundlePolling{DefaultBundleMinDelay, DefaultBundleMaxDelay, 0}) ||
		e.SizeLimitBytes != DefaultBundleSizeLimit || !e.Unsigned || e.Signing != nil {
		t.Errorf("bundle extra = %+v", e)
	}
}

func TestLoadBundlesKeepsPolicyDirDefaultWithout(t *testing.T) {
	path := writeConfig(t, "authz: {}\n")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(filepath.Dir(path), "policies"); cfg.Authz.PolicyDir != want {
		t.Errorf("policy_dir = %q, want %q", cfg.Authz.PolicyDir, want)
	}
}

func TestLoadBundlesRejects(t *testing.T) {
	const svc = "      service: {url: https://b.example}\n"
	const sig = "      signing: {key_id: k, public_key_file: k.pub}\n"
	tests := []struct {
		name, body string
		want       []string
	}{
		{"no name", "authz:\n  bundles:\n    - service: {url: https://b.example}\n" + sig, []string{"meshid.yaml:3: authz.bundles[0].name is required"}},
		{"bad name", "authz:\n  bundles:\n    - name: a/b\n" + svc + sig, []string{`meshid.yaml:3: authz.bundles[0].name "a/b": want letters`}},
		{"dot name", "authz:\n  bundles:\n    - name: ..\n" + svc + sig, []string{`authz.bundles[0].name "..": want letters`}},
		{"same name", "authz:\n  bundles:\n    - name: a\n" + svc + sig + "    - name: a\n" + svc + sig, []string{`meshid.yaml:6: authz.bundles[1].name "a" is the name of another bundle too`}},
		{"same name but case", "authz:\n  bundles:\n    - name: Mesh\n" + svc + sig + "    - name: mesh\n" + svc + sig, []string{`meshid.yaml:6: authz.bundles[1].name "mesh" is the name of another bundle too (names are compared ignoring case)`}},
		{"max alone below 1s", "authz:\n  bundles:\n    - name: a\n" + svc + sig + "      polling: {max_delay: 500ms}\n", []string{"authz.bundles[0].polling.max_delay 500ms: want whole seconds"}},
		{"no url", "authz:\n  bundles:\n    - name: a\n" + sig, []string{"authz.bundles[0].service.url is required"}},
		{"unsigned by default", "authz:\n  bundles:\n    - name: a\n" + svc, []string{"meshid.yaml:3: authz.bundles[0] (a) has no signing: set signing"}},
		{"both", "authz:\n  bundles:\n    - name: a\n" + svc + sig + "      unsigned: true\n", []string{"meshid.yaml:6: authz.bundles[0]: unsigned: true and signing exclude each other"}},
		{"no key id", "authz:\n  bundles:\n    - name: a\n" + svc + "      signing: {public_key_file: k.pub}\n", []string{"meshid.yaml:5: authz.bundles[0].signing.key_id is required"}},
		{"no key file", "authz:\n  bundles:\n    - name: a\n" + svc + "      signing: {key_id: k}\n", []string{"meshid.yaml:5: authz.bundles[0].signing.public_key_file is required"}},
		{"hmac", "authz:\n  bundles:\n    - name: a\n" + svc + "      signing: {key_id: k, public_key_file: k, algorithm: HS256}\n", []string{`meshid.yaml:5: authz.bundles[0].signing.algorithm "HS256": want one of`}},
		{"fast polling", "authz:\n  bundles:\n    - name: a\n" + svc + sig + "      polling: {min_delay: 500ms, max_delay: 1s}\n", []string{"meshid.yaml:6: authz.bundles[0].polling.min_delay 500ms: want whole seconds, at least 1s"}},
		{"max below min", "authz:\n  bundles:\n    - name: a\n" + svc + sig + "      polling: {min_delay: 5s, max_delay: 2s}\n", []string{"authz.bundles[0].polling.max_delay 2s: want whole seconds, no less than min_delay 5s"}},
		{"long poll fraction", "authz:\n  bundles:\n    - name: a\n" + svc + sig + "      polling: {long_polling_timeout: 1500ms}\n", []string{"authz.bundles[0].polling.long_polling_timeout 1.5s: want 0 (poll) or whole seconds"}},
		{"size", "authz:\n  bundles:\n    - name: a\n" + svc + sig + "      size_limit_bytes: -1\n", []string{"meshid.yaml:6: authz.bundles[0].size_limit_bytes -1 must be at least 1"}},
		{"token in clear", "authz:\n  bundles:\n    - name: a\n      service: {url: http://b.example, bearer_token_file: t}\n" + sig, []string{"authz.bundles[0].service.bearer_token_file: the token would cross the network in the clear"}},
		{"unknown key", "authz:\n  bundles:\n    - name: a\n" + svc + sig + "      url: https://b.example\n", []string{`meshid.yaml:6: unknown key "url"`}},
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
