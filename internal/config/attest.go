package config

import (
	"net/url"
	"regexp"
	"time"
)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Unix configures the unix selectors.
type Unix struct {
	// SHA256 adds unix:sha256, the digest of the caller's executable. Off
	// by default: it reads the executable, once per inode and mtime.
	SHA256 bool `yaml:"sha256"`
}

// Docker enables docker selectors when present.
type Docker struct {
	SocketPath string        `yaml:"socket_path"`
	Timeout    time.Duration `yaml:"timeout"`
}

// K8s enables k8s selectors when present.
type K8s struct {
	// KubeletURL is https://HOST:10250 (token_file, ca_file) or the
	// read-only http://HOST:10255.
	KubeletURL string `yaml:"kubelet_url"`
	TokenFile  string `yaml:"token_file"`
	CAFile     string `yaml:"ca_file"`
	// KubeletServerNameEnv names the environment variable that holds the
	// name the kubelet's serving certificate is verified for, when that is
	// not kubelet_url's host: a kubelet's certificate names its node, not
	// 127.0.0.1. A DaemonSet sets the variable from spec.nodeName.
	KubeletServerNameEnv string        `yaml:"kubelet_server_name_env"`
	Timeout              time.Duration `yaml:"timeout"`
	// PodLookupTimeout bounds how long an attestation waits for the
	// kubelet to list a pod that has just started.
	PodLookupTimeout time.Duration `yaml:"pod_lookup_timeout"`
}

const (
	defaultDockerSocket     = "/var/run/docker.sock"
	defaultKubeletURL       = "https://127.0.0.1:10250"
	defaultPodLookupTimeout = 5 * time.Second
	defaultAttestTimeout    = 2 * time.Second
)

// attestDefaults fills in what a present docker or k8s section left out;
// an absent section stays absent (disabled).
func (c *Config) attestDefaults() {
	if d := c.Docker; d != nil {
		if d.SocketPath == "" {
			d.SocketPath = defaultDockerSocket
		}
		if d.Timeout == 0 {
			d.Timeout = defaultAttestTimeout
		}
	}
	if k := c.K8s; k != nil {
		if k.KubeletURL == "" {
			k.KubeletURL = defaultKubeletURL
		}
		if k.Timeout == 0 {
			k.Timeout = defaultAttestTimeout
		}
		if k.PodLookupTimeout == 0 {
			k.PodLookupTimeout = defaultPodLookupTimeout
		}
	}
}

// attestPaths lists the file paths of the attestation sections, to be
// resolved against the config file's directory.
func (c *Config) attestPaths() []*string {
	var paths []*string
	if d := c.Docker; d != nil {
		paths = append(paths, &d.SocketPath)
	}
	if k := c.K8s; k != nil {
		paths = append(paths, &k.TokenFile, &k.CAFile)
	}
	return paths
}

func (c Config) validateAttest(bad func(path []any, format string, args ...any)) {
	if d := c.Docker; d != nil && d.Timeout < 0 {
		bad(at("docker", "timeout"), "docker.timeout must be positive")
	}
	if k := c.K8s; k != nil {
		u, err := url.Parse(k.KubeletURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad(at("k8s", "kubelet_url"), "k8s.kubelet_url %q: want https://HOST:10250 or the read-only http://HOST:10255", k.KubeletURL)
		} else if k.KubeletServerNameEnv != "" && u.Scheme != "https" {
			bad(at("k8s", "kubelet_server_name_env"), "k8s.kubelet_server_name_env names the kubelet's certificate, but kubelet_url %s is plain http", k.KubeletURL)
		}
		if n := k.KubeletServerNameEnv; n != "" && !envName.MatchString(n) {
			bad(at("k8s", "kubelet_server_name_env"), "k8s.kubelet_server_name_env %q: want the name of an environment variable, e.g. NODE_NAME", n)
		}
		if k.Timeout < 0 {
			bad(at("k8s", "timeout"), "k8s.timeout must be positive")
		}
		if k.PodLookupTimeout < 0 {
			bad(at("k8s", "pod_lookup_timeout"), "k8s.pod_lookup_timeout must be positive")
		}
	}
}
