package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "meshid.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadAppliesDefaultsAndResolvesPaths(t *testing.T) {
	path := writeConfig(t, "trust_domain: corp.example\nsvid: {x509_ttl: 30s}\n")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	if cfg.TrustDomain != "corp.example" || cfg.SVID.X509TTL != 30*time.Second {
		t.Errorf("explicit values lost: %+v", cfg)
	}
	if cfg.CA.TTL != 24*time.Hour || cfg.Authz.Address != "127.0.0.1:9191" {
		t.Errorf("defaults missing: %+v", cfg)
	}
	if cfg.DataDir != filepath.Join(dir, ".meshid") || cfg.EntriesFile != filepath.Join(dir, "entries.yaml") {
		t.Errorf("relative paths not resolved against %s: %+v", dir, cfg)
	}
	if !cfg.EntriesOptional {
		t.Error("entries_file not set, so a missing default file must be optional")
	}
	if cfg.SocketPath != DefaultSocketPath || DefaultSocketPath != "/run/meshid/agent.sock" {
		t.Errorf("socket_path = %q, want the default /run/meshid/agent.sock unchanged", cfg.SocketPath)
	}
}

// The root-only admin socket sits beside the workload socket unless
// admin.socket_path says otherwise (resolved like every path).
func TestAdminSocketPath(t *testing.T) {
	if got := Default().AdminSocketPath(); got != "/run/meshid/admin.sock" {
		t.Errorf("default admin socket %q, want /run/meshid/admin.sock", got)
	}
	cfg, err := Load(writeConfig(t, "socket_path: /run/other/agent.sock\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.AdminSocketPath(); got != "/run/other/admin.sock" {
		t.Errorf("admin socket %q, want it beside socket_path: /run/other/admin.sock", got)
	}
	path := writeConfig(t, "admin:\n  socket_path: run/admin.sock\n")
	if cfg, err = Load(path); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(filepath.Dir(path), "run/admin.sock"); cfg.AdminSocketPath() != want {
		t.Errorf("admin socket %q, want %q", cfg.AdminSocketPath(), want)
	}
}

func TestLoadUpstreamPathsAreResolved(t *testing.T) {
	path := writeConfig(t, "ca:\n  upstream: {cert_file: n/i.crt, key_file: /abs/i.key, bundle_file: b.crt}\n")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(path)
	u := cfg.CA.Upstream
	if u.CertFile != filepath.Join(dir, "n/i.crt") || u.KeyFile != "/abs/i.key" || u.BundleFile != filepath.Join(dir, "b.crt") {
		t.Errorf("upstream paths = %+v", u)
	}
	if cfg.SVID.JWTTTL != 5*time.Minute {
		t.Errorf("default jwt_ttl = %s, want 5m", cfg.SVID.JWTTTL)
	}
}

func TestLoadVaultDefaultsAndPaths(t *testing.T) {
	path := writeConfig(t, "ca:\n  upstream:\n    vault:\n      address: https://pki.example:8200\n      ca_file: pki-ca.crt\n      kubernetes: {role: meshid}\n")
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	v := cfg.CA.Upstream.Vault
	dir := filepath.Dir(path)
	if v.PKIMount != "pki" || v.RootsRefresh != 5*time.Minute || v.CAFile != filepath.Join(dir, "pki-ca.crt") {
		t.Errorf("vault = %+v", v)
	}
	if k := v.Kubernetes; k.Mount != "kubernetes" || k.TokenFile != DefaultKubernetesTokenFile {
		t.Errorf("kubernetes = %+v", k)
	}
}

func TestLoadExplicitEntriesFileIsRequired(t *testing.T) {
	cfg, err := Load(writeConfig(t, "entries_file: my-entries.yaml\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.EntriesOptional {
		t.Error("an explicit entries_file must not be optional")
	}
}

func TestLoadRejectsBadInputWithFileAndLine(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string
	}{
		{"unknown key", "trust_domain: a.org\nsockets: /x\n", []string{`meshid.yaml:2: unknown key "sockets"`}},
		{"unknown nested key", "authz:\n  adress: 1.2.3.4:1\n", []string{`meshid.yaml:2: unknown key "adress"`}},
		{"bad trust domain", "log: {level: info}\ntrust_domain: Not_Valid!\n", []string{"meshid.yaml:2: trust_domain"}},
		{"bad duration", "svid:\n  x509_ttl: soon\n", []string{"meshid.yaml:2:"}},
		{"short ttl", "svid:\n  x509_ttl: 1s\n", []string{"meshid.yaml:2: svid.x509_ttl 1s is shorter than the minimum 10s"}},
		{"admin socket is the workload socket", "socket_path: /run/m/agent.sock\nadmin:\n  socket_path: /run/m/agent.sock\n", []string{"meshid.yaml:3: admin.socket_path /run/m/agent.sock is socket_path too"}},
		{"several problems at once", "admin:\n  address: nope\nlog:\n  level: loud\n  format: xml\n", []string{
			"meshid.yaml:2: admin.address", "meshid.yaml:4: log.level", "meshid.yaml:5: log.format"}},
		{"unsupported key type", "ca:\n  key_type: rsa-2048\n", []string{"meshid.yaml:2: ca.key_type \"rsa-2048\" is not supported"}},
		{"short jwt ttl", "svid:\n  jwt_ttl: 5s\n", []string{"meshid.yaml:2: svid.jwt_ttl 5s is shorter than the minimum 30s"}},
		{"issue 13: x509 ttl of 1ns", "svid:\n  x509_ttl: 1ns\n", []string{"meshid.yaml:2: svid.x509_ttl 1ns is shorter than the minimum 10s"}},
		{"zero jwt ttl", "svid:\n  jwt_ttl: 0s\n", []string{"meshid.yaml:2: svid.jwt_ttl 0s is shorter than the minimum 30s"}},
		{"short ca ttl", "ca:\n  ttl: 59m\n", []string{"meshid.yaml:2: ca.ttl 59m0s is shorter than the minimum 1h0m0s"}},
		{"x509 ttl outlives the ca", "ca:\n  ttl: 2h\nsvid:\n  x509_ttl: 3h\n", []string{"meshid.yaml:4: svid.x509_ttl 3h0m0s is longer than ca.ttl 2h0m0s"}},
		{"incomplete upstream", "ca:\n  upstream:\n    cert_file: a.crt\n", []string{"meshid.yaml:2: ca.upstream.key_file is required", "meshid.yaml:2: ca.upstream.bundle_file is required"}},
		{"federation problems", "federation:\n  bundles:\n    - trust_domain: example.org\n      bundle_file: a.pem\n    - trust_domain: Bad Domain\n      bundle_file: b.pem\n    - trust_domain: partner.example\n", []string{
			`meshid.yaml:3: federation.bundles[0].trust_domain "example.org" is this node's own trust domain`,
			`meshid.yaml:5: federation.bundles[1].trust_domain "Bad Domain"`,
			`meshid.yaml:7: federation.bundles[2] needs a bundle_file, an endpoint_url or both`}},
		{"federation listed twice", "federation:\n  bundles:\n    - {trust_domain: partner.example, bundle_file: a.pem}\n    - {trust_domain: partner.example, bundle_file: b.pem}\n", []string{
			`meshid.yaml:4: federation.bundles[1].trust_domain "partner.example" is listed twice`}},
		{"bundle endpoint problems", "federation:\n  bundle_endpoint:\n    address: nope\n    profile: https_web\n    refresh_hint: 10ms\n", []string{
			`meshid.yaml:3: federation.bundle_endpoint.address: "nope": want host:port`,
			`meshid.yaml:5: federation.bundle_endpoint.refresh_hint 10ms is shorter than 1s`,
			`meshid.yaml:4: federation.bundle_endpoint: https_web needs cert_file and key_file`}},
		{"bundle endpoint of another domain", "federation:\n  bundle_endpoint:\n    address: :8443\n    spiffe_id: spiffe://other.example/meshid\n", []string{
			`meshid.yaml:4: federation.bundle_endpoint.spiffe_id "spiffe://other.example/meshid" is not in this node's trust domain "example.org"`}},
		{"unknown bundle endpoint profile", "federation:\n  bundle_endpoint:\n    address: :8443\n    profile: http\n", []string{
			`meshid.yaml:4: federation.bundle_endpoint.profile "http": want https_spiffe or https_web`}},
		{"federation endpoint problems", "federation:\n  bundles:\n    - trust_domain: partner.example\n      endpoint_url: http://partner.example/\n    - trust_domain: third.example\n      endpoint_url: https://third.example/\n      endpoint_spiffe_id: spiffe://partner.example/meshid\n      endpoint_ca_file: web.pem\n    - trust_domain: fourth.example\n      bundle_file: f.pem\n      endpoint_ca_file: web.pem\n", []string{
			`meshid.yaml:4: federation.bundles[0].endpoint_url "http://partner.example/": want https://host[:port]/path`,
			`meshid.yaml:7: federation.bundles[1].endpoint_spiffe_id "spiffe://partner.example/meshid" is not in trust domain "third.example"`,
			`meshid.yaml:8: federation.bundles[1]: endpoint_ca_file is for https_web, but endpoint_spiffe_id selects https_spiffe`,
			`federation.bundles[2]: endpoint_spiffe_id and endpoint_ca_file need an endpoint_url`}},
		{"socket path too long", "socket_path: /run/" + strings.Repeat("s", 103) + "\n", []string{
			"meshid.yaml:1: socket_path /run/sss", "is 108 bytes, longer than the 107 a Unix socket path may have"}},
		{"unknown upstream key", "ca:\n  upstream:\n    cert: a.crt\n", []string{`meshid.yaml:3: unknown key "cert"`}},
		{"vault without address", "ca:\n  upstream:\n    vault:\n      token_file: t\n", []string{"meshid.yaml:3: ca.upstream.vault.address is required"}},
		{"vault address not a URL", "ca:\n  upstream:\n    vault:\n      address: pki.example:8200\n", []string{`meshid.yaml:4: ca.upstream.vault.address "pki.example:8200": want https://host:port`}},
		{"vault and files", "ca:\n  upstream:\n    cert_file: a.crt\n    vault: {address: \"https://pki:8200\"}\n", []string{"meshid.yaml:3: ca.upstream.cert_file and ca.upstream.vault exclude each other"}},
		{"two logins", "ca:\n  upstream:\n    vault:\n      address: https://pki:8200\n      token_file: t\n      approle: {role_id_file: r, secret_id_file: s}\n", []string{"meshid.yaml:3: ca.upstream.vault: token_file, approle and kubernetes exclude each other"}},
		{"incomplete approle", "ca:\n  upstream:\n    vault:\n      address: https://pki:8200\n      approle: {role_id_file: r}\n", []string{"meshid.yaml:5: ca.upstream.vault.approle.secret_id_file is required"}},
		{"kubernetes without role", "ca:\n  upstream:\n    vault:\n      address: https://pki:8200\n      kubernetes: {mount: k8s}\n", []string{"meshid.yaml:5: ca.upstream.vault.kubernetes.role is required"}},
		{"short roots refresh", "ca:\n  upstream:\n    vault:\n      address: https://pki:8200\n      roots_refresh: 1s\n", []string{"meshid.yaml:5: ca.upstream.vault.roots_refresh 1s is shorter than the minimum 10s"}},
		{"vault over plain http", "ca:\n  upstream:\n    vault:\n      address: http://pki.example:8200\n", []string{`meshid.yaml:4: ca.upstream.vault.address "http://pki.example:8200": plain http would send the token`}},
		{"unknown vault key", "ca:\n  upstream:\n    vault:\n      adress: https://pki:8200\n", []string{`meshid.yaml:4: unknown key "adress"`}},
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

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}
