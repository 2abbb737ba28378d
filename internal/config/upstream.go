package config

import (
	"net"
	"net/url"
	"time"
)

// Upstream makes meshid's CA an intermediate of an existing root: either
// an intermediate minted for this node, read from files (CertFile,
// KeyFile, BundleFile), or one a Vault-API PKI engine signs for it and
// renews (Vault).
type Upstream struct {
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	BundleFile string `yaml:"bundle_file"`
	Vault      *Vault `yaml:"vault"`
}

// Vault is a Vault or OpenBao PKI mount that signs this node's
// intermediates (docs/operations.md § Certificates).
type Vault struct {
	Address      string        `yaml:"address"`
	PKIMount     string        `yaml:"pki_mount"`
	CAFile       string        `yaml:"ca_file"`
	Namespace    string        `yaml:"namespace"`
	TokenFile    string        `yaml:"token_file"`
	AppRole      *AppRole      `yaml:"approle"`
	Kubernetes   *Kubernetes   `yaml:"kubernetes"`
	RootsRefresh time.Duration `yaml:"roots_refresh"`
}

// AppRole logs in to Vault's AppRole auth method.
type AppRole struct {
	RoleIDFile   string `yaml:"role_id_file"`
	SecretIDFile string `yaml:"secret_id_file"`
	Mount        string `yaml:"mount"`
}

// Kubernetes logs in to Vault's Kubernetes auth method with the pod's
// service account token.
type Kubernetes struct {
	Role      string `yaml:"role"`
	TokenFile string `yaml:"token_file"`
	Mount     string `yaml:"mount"`
}

// Defaults of ca.upstream.vault, set when the section is present.
const (
	DefaultPKIMount            = "pki"
	DefaultAppRoleMount        = "approle"
	DefaultKubernetesMount     = "kubernetes"
	DefaultKubernetesTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	DefaultRootsRefresh        = 5 * time.Minute
	minRootsRefresh            = 10 * time.Second
)

func (c *Config) upstreamDefaults() {
	if c.CA.Upstream == nil || c.CA.Upstream.Vault == nil {
		return
	}
	v := c.CA.Upstream.Vault
	if v.PKIMount == "" {
		v.PKIMount = DefaultPKIMount
	}
	if v.RootsRefresh == 0 {
		v.RootsRefresh = DefaultRootsRefresh
	}
	if v.AppRole != nil && v.AppRole.Mount == "" {
		v.AppRole.Mount = DefaultAppRoleMount
	}
	if k := v.Kubernetes; k != nil {
		if k.Mount == "" {
			k.Mount = DefaultKubernetesMount
		}
		if k.TokenFile == "" {
			k.TokenFile = DefaultKubernetesTokenFile
		}
	}
}

func (u *Upstream) paths() []*string {
	if u == nil {
		return nil
	}
	paths := []*string{&u.CertFile, &u.KeyFile, &u.BundleFile}
	if v := u.Vault; v != nil {
		paths = append(paths, &v.CAFile, &v.TokenFile)
		if a := v.AppRole; a != nil {
			paths = append(paths, &a.RoleIDFile, &a.SecretIDFile)
		}
		if k := v.Kubernetes; k != nil {
			paths = append(paths, &k.TokenFile)
		}
	}
	return paths
}

func (u *Upstream) validate(bad func(path []any, format string, args ...any)) {
	if u == nil {
		return
	}
	files := []struct{ key, val string }{{"cert_file", u.CertFile}, {"key_file", u.KeyFile}, {"bundle_file", u.BundleFile}}
	if u.Vault == nil {
		for _, f := range files {
			if f.val == "" {
				bad(at("ca", "upstream"), "ca.upstream.%s is required (or ca.upstream.vault)", f.key)
			}
		}
		return
	}
	for _, f := range files {
		if f.val != "" {
			bad(at("ca", "upstream", f.key), "ca.upstream.%s and ca.upstream.vault exclude each other: the engine signs the intermediate", f.key)
		}
	}
	v := u.Vault
	vat := func(key ...any) []any { return append([]any{"ca", "upstream", "vault"}, key...) }
	switch a, err := url.Parse(v.Address); {
	case v.Address == "":
		bad(vat(), "ca.upstream.vault.address is required")
	case err != nil || (a.Scheme != "https" && a.Scheme != "http") || a.Host == "":
		bad(vat("address"), "ca.upstream.vault.address %q: want https://host:port", v.Address)
	case a.Scheme == "http" && !loopback(a.Hostname()):
		bad(vat("address"), "ca.upstream.vault.address %q: plain http would send the token and the intermediates in the clear; use https (http is for an engine on loopback)", v.Address)
	}
	logins := 0
	for _, set := range []bool{v.TokenFile != "", v.AppRole != nil, v.Kubernetes != nil} {
		if set {
			logins++
		}
	}
	if logins > 1 {
		bad(vat(), "ca.upstream.vault: token_file, approle and kubernetes exclude each other; choose one way to log in")
	}
	if a := v.AppRole; a != nil {
		if a.RoleIDFile == "" {
			bad(vat("approle"), "ca.upstream.vault.approle.role_id_file is required")
		}
		if a.SecretIDFile == "" {
			bad(vat("approle"), "ca.upstream.vault.approle.secret_id_file is required")
		}
	}
	if k := v.Kubernetes; k != nil && k.Role == "" {
		bad(vat("kubernetes"), "ca.upstream.vault.kubernetes.role is required")
	}
	if v.RootsRefresh < minRootsRefresh {
		bad(vat("roots_refresh"), "ca.upstream.vault.roots_refresh %s is shorter than the minimum %s", v.RootsRefresh, minRootsRefresh)
	}
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
