package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAttestationSections(t *testing.T) {
	t.Run("absent sections stay off", func(t *testing.T) {
		cfg, err := Load(writeConfig(t, "trust_domain: example.org\n"))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Docker != nil || cfg.K8s != nil || cfg.Unix.SHA256 {
			t.Fatalf("attestation on by default: %+v %+v %+v", cfg.Unix, cfg.Docker, cfg.K8s)
		}
	})
	t.Run("present sections get defaults and resolved paths", func(t *testing.T) {
		path := writeConfig(t, "unix: {sha256: true}\ndocker: {}\nk8s: {token_file: token, ca_file: /etc/kubelet/ca.crt}\n")
		cfg, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Dir(path)
		if !cfg.Unix.SHA256 || cfg.Docker.SocketPath != "/var/run/docker.sock" || cfg.Docker.Timeout != 2*time.Second {
			t.Errorf("unix %+v docker %+v", cfg.Unix, cfg.Docker)
		}
		if k := cfg.K8s; k.KubeletURL != "https://127.0.0.1:10250" || k.TokenFile != filepath.Join(dir, "token") ||
			k.CAFile != "/etc/kubelet/ca.crt" || k.PodLookupTimeout != 5*time.Second {
			t.Errorf("k8s %+v", k)
		}
	})
	for _, tt := range []struct{ in, want string }{
		{"k8s: {kubelet_url: 127.0.0.1:10250}\n", "meshid.yaml:1: k8s.kubelet_url \"127.0.0.1:10250\""},
		{"k8s:\n  pod_lookup_timeout: -1s\n", "meshid.yaml:2: k8s.pod_lookup_timeout must be positive"},
		{"k8s:\n  kubelet_server_name_env: $NODE_NAME\n", "meshid.yaml:2: k8s.kubelet_server_name_env \"$NODE_NAME\": want the name of an environment variable"},
		{"k8s:\n  kubelet_url: http://127.0.0.1:10255\n  kubelet_server_name_env: NODE_NAME\n", "meshid.yaml:3: k8s.kubelet_server_name_env names the kubelet's certificate, but kubelet_url http://127.0.0.1:10255 is plain http"},
		{"docker: {timeout: -1s}\n", "docker.timeout must be positive"},
		{"docker: {socket: /x}\n", "unknown key \"socket\""},
	} {
		t.Run(tt.want, func(t *testing.T) {
			_, err := Load(writeConfig(t, tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load(%q) = %v, want %q", tt.in, err, tt.want)
			}
		})
	}
}
