package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// OpenBao is a real Vault-API engine (`bao server`, from $MESHID_BAO) on
// a loopback port, for ca.upstream.vault: raft storage in Env.Dir, so a
// Restart keeps its mounts, roots and tokens, one unseal key the harness
// holds, and a PKI mount with a root. One engine can serve any number of
// meshid nodes: each gets the same Address, Mount and CAFile, and a token
// of its own (Token, AppRole).
type OpenBao struct {
	*Process
	// Address is the engine's URL, "http://127.0.0.1:PORT" (https with
	// OpenBaoOptions.TLS).
	Address string
	// CAFile verifies the engine's TLS certificate; "" without TLS.
	CAFile string
	// Mount is the PKI mount, "pki".
	Mount string
	// RootToken may do anything; meshid gets a token of its own.
	RootToken string
	// Dir holds the engine's config, storage and credential files.
	Dir string

	// Namespace is the engine namespace this handle's calls go to ("":
	// the root namespace); see InNamespace.
	Namespace string

	env       *Env
	listen    string // the API's address
	cluster   string // raft's
	unsealKey string
	http      *http.Client
}

// OpenBaoOptions configures StartOpenBao.
type OpenBaoOptions struct {
	// Name of the process and of its directory in Env.Dir; default "openbao".
	Name string
	// TLS serves the API over HTTPS with a certificate for 127.0.0.1
	// from a CA written to OpenBao.CAFile.
	TLS bool
	// RootTTL is the lifetime of the PKI root; default a year.
	RootTTL time.Duration
	// Listen is the API's "IP:PORT", e.g. on a bridge that meshid nodes in
	// other network namespaces reach; default a free loopback port. The
	// raft cluster port is a free port on the same IP, and with TLS the
	// certificate is for that IP.
	Listen string
}

// MeshidPolicy is the least a meshid node needs on mount: have its
// intermediate signed and read the issuers.
func MeshidPolicy(mount string) string {
	return fmt.Sprintf(`path "%[1]s/root/sign-intermediate" { capabilities = ["update"] }
path "%[1]s/issuers" { capabilities = ["list"] }
path "%[1]s/issuer/+/json" { capabilities = ["read"] }
`, mount)
}

// BaoPath returns the bao binary: $MESHID_BAO, or what `make tools`
// installed in the repository's .tools/bin.
func BaoPath() (string, error) {
	if p := os.Getenv("MESHID_BAO"); p != "" {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	matches, _ := filepath.Glob(filepath.Join(root, ".tools", "bin", "bao-*"))
	if len(matches) == 0 {
		return "", errors.New("harness: no OpenBao: set $MESHID_BAO or run `make tools` (mk/openbao.mk installs it)")
	}
	return matches[len(matches)-1], nil
}

// StartOpenBao starts an engine, initialises and unseals it, and mounts
// PKI at "pki" with an EC P-256 root ("root 1"). It returns once the
// engine answers as the active, unsealed node.
func (e *Env) StartOpenBao(ctx context.Context, o OpenBaoOptions) (*OpenBao, error) {
	bin, err := BaoPath()
	if err != nil {
		return nil, err
	}
	if o.Name == "" {
		o.Name = "openbao"
	}
	if o.RootTTL == 0 {
		o.RootTTL = 365 * 24 * time.Hour
	}
	dir, err := e.MkdirAll(o.Name)
	if err != nil {
		return nil, err
	}
	b := &OpenBao{Mount: "pki", Dir: dir, env: e, listen: o.Listen, cluster: e.FreeAddr(),
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}}
	if b.listen == "" {
		b.listen = e.FreeAddr()
	} else if host, _, err := net.SplitHostPort(b.listen); err != nil || net.ParseIP(host) == nil {
		return nil, fmt.Errorf("harness: OpenBaoOptions.Listen %q: want IP:PORT", b.listen)
	} else {
		// FreeAddr's port, on the API's IP.
		_, port, _ := net.SplitHostPort(b.cluster)
		b.cluster = net.JoinHostPort(host, port)
	}
	scheme, tlsConf := "http", `tls_disable = true`
	if o.TLS {
		if err := b.writeTLS(); err != nil {
			return nil, err
		}
		scheme = "https"
		tlsConf = fmt.Sprintf("tls_cert_file = %q\n  tls_key_file = %q", filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	}
	b.Address = scheme + "://" + b.listen
	// Raft, the one persistent storage OpenBao keeps, on a single node:
	// its cluster port is a second free loopback port.
	conf := fmt.Sprintf(`storage "raft" {
  path = %q
  node_id = "node1"
  performance_multiplier = 1 # election in a second, not five: a test waits for it
}
listener "tcp" {
  address = %q
  cluster_address = %q
  %s
}
api_addr = %q
cluster_addr = "https://%s"
log_level = "info"
`, filepath.Join(dir, "data"), b.listen, b.cluster, tlsConf, b.Address, b.cluster)
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.hcl"), []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	if err := b.start(ctx, bin); err != nil {
		return nil, err
	}
	var init struct {
		Keys      []string `json:"keys"`
		RootToken string   `json:"root_token"`
	}
	if err := b.Call(ctx, "PUT", "sys/init", map[string]any{"secret_shares": 1, "secret_threshold": 1}, &init); err != nil {
		return nil, b.failure(err)
	}
	if len(init.Keys) != 1 || init.RootToken == "" {
		return nil, b.failure(fmt.Errorf("harness: sys/init gave %d keys and root token %q", len(init.Keys), init.RootToken))
	}
	b.unsealKey, b.RootToken = init.Keys[0], init.RootToken
	if err := b.unseal(ctx); err != nil {
		return nil, err
	}
	if err := b.Call(ctx, "POST", "sys/mounts/"+b.Mount, map[string]any{
		"type": "pki", "config": map[string]any{"max_lease_ttl": "87600h"},
	}, nil); err != nil {
		return nil, b.failure(err)
	}
	if _, err := b.generateRoot(ctx, "root/generate/internal", "root 1", o.RootTTL); err != nil {
		return nil, b.failure(err)
	}
	e.logf("harness: %s ready at %s (pid %d), PKI at %s", b.Name, b.Address, b.Pid(), b.Mount)
	return b, nil
}

// start runs the server and waits until its API answers at all.
func (b *OpenBao) start(ctx context.Context, bin string) error {
	p, err := b.env.Start(ctx, ProcSpec{Name: filepath.Base(b.Dir), Path: bin,
		Args: []string{"server", "-config", filepath.Join(b.Dir, "config.hcl")},
		// The engine reads no VAULT_/BAO_ settings of the test's own.
		Env: []string{"BAO_ADDR=", "VAULT_ADDR=", "BAO_TOKEN=", "VAULT_TOKEN="}})
	if err != nil {
		return err
	}
	b.Process = p
	ctx, cancel := context.WithTimeout(ctx, b.env.readyTimeout)
	defer cancel()
	for {
		// sys/health answers (501 uninitialised, 503 sealed, 200 active)
		// once the listener is up.
		status, err := b.status(ctx, "GET", "sys/health")
		if err == nil && status != 0 {
			return nil
		}
		select {
		case <-p.Done():
			return p.failure(errors.New("harness: openbao exited before its API answered"))
		case <-ctx.Done():
			return p.failure(fmt.Errorf("harness: openbao API at %s never answered: %w", b.Address, err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (b *OpenBao) unseal(ctx context.Context) error {
	if err := b.Call(ctx, "PUT", "sys/unseal", map[string]any{"key": b.unsealKey}, nil); err != nil {
		return b.failure(err)
	}
	ctx, cancel := context.WithTimeout(ctx, b.env.readyTimeout)
	defer cancel()
	for {
		status, err := b.status(ctx, "GET", "sys/health")
		if err == nil && status == http.StatusOK {
			return nil
		}
		select {
		case <-ctx.Done():
			return b.failure(fmt.Errorf("harness: openbao not active after unseal: status %d, %w", status, err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// InNamespace creates the engine namespace name, mounts PKI at "pki" in
// it with a root of its own ("<name> root"), and returns a handle whose
// calls (Token, AppRole, RotateRoot, ...) go to that namespace.
func (b *OpenBao) InNamespace(ctx context.Context, name string) (*OpenBao, error) {
	if err := b.Call(ctx, "POST", "sys/namespaces/"+name, map[string]any{}, nil); err != nil {
		return nil, err
	}
	ns := *b
	ns.Namespace = name
	if err := ns.Call(ctx, "POST", "sys/mounts/"+ns.Mount, map[string]any{
		"type": "pki", "config": map[string]any{"max_lease_ttl": "87600h"},
	}, nil); err != nil {
		return nil, err
	}
	if _, err := ns.generateRoot(ctx, "root/generate/internal", name+" root", 365*24*time.Hour); err != nil {
		return nil, err
	}
	return &ns, nil
}

// Stop stops the engine, as an outage does: meshid nodes find nothing
// listening at Address until Restart.
func (b *OpenBao) Stop() error { return b.Process.Stop(5 * time.Second) }

// Restart starts the engine again on the same address and storage and
// unseals it: the same mounts, roots, policies and tokens as before.
func (b *OpenBao) Restart(ctx context.Context) error {
	if err := b.Stop(); err != nil {
		return err
	}
	bin, err := BaoPath()
	if err != nil {
		return err
	}
	if err := b.start(ctx, bin); err != nil {
		return err
	}
	return b.unseal(ctx)
}

// RotateRoot generates a new root as a new issuer and makes it the
// default one, which signs from now on; the old root stays an issuer of
// the mount until DeleteIssuer. It returns the new issuer's ID.
func (b *OpenBao) RotateRoot(ctx context.Context, name string) (string, error) {
	id, err := b.generateRoot(ctx, "root/rotate/internal", name, 365*24*time.Hour)
	if err != nil {
		return "", err
	}
	if err := b.Call(ctx, "POST", b.Mount+"/root/replace", map[string]any{"default": id}, nil); err != nil {
		return "", err
	}
	return id, nil
}

func (b *OpenBao) generateRoot(ctx context.Context, path, name string, ttl time.Duration) (string, error) {
	var out struct {
		Data struct {
			IssuerID string `json:"issuer_id"`
		} `json:"data"`
	}
	err := b.Call(ctx, "POST", b.Mount+"/"+path, map[string]any{
		"common_name": name, "issuer_name": strings.ReplaceAll(name, " ", "-"),
		"key_type": "ec", "key_bits": 256, "ttl": fmt.Sprintf("%ds", int64(ttl/time.Second)),
	}, &out)
	if err == nil && out.Data.IssuerID == "" {
		err = fmt.Errorf("harness: %s/%s returned no issuer_id", b.Mount, path)
	}
	return out.Data.IssuerID, err
}

// DeleteIssuer removes an issuer (a root) from the mount.
func (b *OpenBao) DeleteIssuer(ctx context.Context, id string) error {
	return b.Call(ctx, "DELETE", b.Mount+"/issuer/"+id, nil, nil)
}

// Roots returns the certificate of every issuer on the mount, as the
// engine itself lists them.
func (b *OpenBao) Roots(ctx context.Context) ([]*x509.Certificate, error) {
	var list struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	if err := b.Call(ctx, "LIST", b.Mount+"/issuers", nil, &list); err != nil {
		return nil, err
	}
	var roots []*x509.Certificate
	for _, id := range list.Data.Keys {
		var issuer struct {
			Data struct {
				Certificate string `json:"certificate"`
			} `json:"data"`
		}
		if err := b.Call(ctx, "GET", b.Mount+"/issuer/"+id+"/json", nil, &issuer); err != nil {
			return nil, err
		}
		block, _ := pem.Decode([]byte(issuer.Data.Certificate))
		if block == nil {
			return nil, fmt.Errorf("harness: issuer %s: no PEM certificate", id)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("harness: issuer %s: %w", id, err)
		}
		roots = append(roots, c)
	}
	return roots, nil
}

// MeshidConfig is the ca section of meshid.yaml (MeshidOptions.ExtraConfig)
// for a node of this engine that logs in with tokenFile (Token) and reads
// the roots every rootsRefresh (zero: meshid's default).
func (b *OpenBao) MeshidConfig(tokenFile string, rootsRefresh time.Duration) string {
	s := fmt.Sprintf("ca:\n  upstream:\n    vault:\n      address: %s\n      pki_mount: %s\n      token_file: %s\n", b.Address, b.Mount, tokenFile)
	if b.CAFile != "" {
		s += fmt.Sprintf("      ca_file: %s\n", b.CAFile)
	}
	if b.Namespace != "" {
		s += fmt.Sprintf("      namespace: %s\n", b.Namespace)
	}
	if rootsRefresh > 0 {
		s += fmt.Sprintf("      roots_refresh: %s\n", rootsRefresh)
	}
	return s
}

// Token writes policy as policyName and creates a token with it alone,
// valid for ttl, into a file of mode 0600 in Dir; it returns the path.
func (b *OpenBao) Token(ctx context.Context, policyName, policy string, ttl time.Duration) (string, error) {
	if err := b.Call(ctx, "PUT", "sys/policies/acl/"+policyName, map[string]any{"policy": policy}, nil); err != nil {
		return "", err
	}
	var out struct {
		Auth struct {
			ClientToken string `json:"client_token"`
		} `json:"auth"`
	}
	if err := b.Call(ctx, "POST", "auth/token/create", map[string]any{
		"policies": []string{policyName}, "ttl": fmt.Sprintf("%ds", int64(ttl/time.Second)), "no_default_policy": true,
	}, &out); err != nil {
		return "", err
	}
	return b.secretFile("token-"+policyName, out.Auth.ClientToken)
}

// AppRole enables the AppRole auth method (once), writes policy and a
// role with it whose tokens live tokenTTL, and returns the files holding
// its role ID and a fresh secret ID.
func (b *OpenBao) AppRole(ctx context.Context, role, policy string, tokenTTL time.Duration) (roleIDFile, secretIDFile string, err error) {
	var auths map[string]any
	if err := b.Call(ctx, "GET", "sys/auth", nil, &auths); err != nil {
		return "", "", err
	}
	if _, ok := auths["approle/"]; !ok {
		if err := b.Call(ctx, "POST", "sys/auth/approle", map[string]any{"type": "approle"}, nil); err != nil {
			return "", "", err
		}
	}
	if err := b.Call(ctx, "PUT", "sys/policies/acl/"+role, map[string]any{"policy": policy}, nil); err != nil {
		return "", "", err
	}
	if err := b.Call(ctx, "POST", "auth/approle/role/"+role, map[string]any{
		"token_policies": []string{role}, "token_ttl": fmt.Sprintf("%ds", int64(tokenTTL/time.Second)),
		"token_no_default_policy": true,
	}, nil); err != nil {
		return "", "", err
	}
	var id struct {
		Data struct {
			RoleID   string `json:"role_id"`
			SecretID string `json:"secret_id"`
		} `json:"data"`
	}
	if err := b.Call(ctx, "GET", "auth/approle/role/"+role+"/role-id", nil, &id); err != nil {
		return "", "", err
	}
	if err := b.Call(ctx, "POST", "auth/approle/role/"+role+"/secret-id", map[string]any{}, &id); err != nil {
		return "", "", err
	}
	if roleIDFile, err = b.secretFile("role-id-"+role, id.Data.RoleID); err != nil {
		return "", "", err
	}
	secretIDFile, err = b.secretFile("secret-id-"+role, id.Data.SecretID)
	return roleIDFile, secretIDFile, err
}

func (b *OpenBao) secretFile(name, value string) (string, error) {
	if value == "" {
		return "", fmt.Errorf("harness: openbao gave an empty %s", name)
	}
	path := filepath.Join(b.Dir, name)
	if err := os.WriteFile(path, []byte(value+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	return path, nil
}

// Call sends one API request with the root token: method ("LIST" is
// Vault's own), a path under /v1/, a JSON body or nil, and decodes the
// JSON answer into out unless it is nil. A status of 300 or more is an
// error carrying the engine's messages.
func (b *OpenBao) Call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.Address+"/v1/"+path, rd)
	if err != nil {
		return err
	}
	if b.RootToken != "" {
		req.Header.Set("X-Vault-Token", b.RootToken)
	}
	if b.Namespace != "" {
		req.Header.Set("X-Vault-Namespace", b.Namespace)
	}
	resp, err := b.client().Do(req)
	if err != nil {
		return fmt.Errorf("harness: openbao %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("harness: openbao %s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		return fmt.Errorf("harness: openbao %s %s: status %d: %s", method, path, resp.StatusCode, snippet(data))
	}
	if out != nil && len(data) > 0 {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("harness: openbao %s %s: %w", method, path, err)
		}
	}
	return nil
}

// status sends a request and returns its status code alone.
func (b *OpenBao) status(ctx context.Context, method, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, b.Address+"/v1/"+path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := b.client().Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (b *OpenBao) client() *http.Client {
	if b.CAFile != "" && b.http.Transport.(*http.Transport).TLSClientConfig == nil {
		if data, err := os.ReadFile(b.CAFile); err == nil {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(data)
			b.http.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
	}
	return b.http
}

// writeTLS makes a CA and a server certificate for the API's IP signed
// by it: tls.crt and tls.key for the engine, ca.crt as CAFile.
func (b *OpenBao) writeTLS() error {
	host, _, _ := net.SplitHostPort(b.listen)
	ca, der, key, err := servingCert("openbao test CA", host, []net.IP{net.ParseIP(host)})
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	caDER := ca.Raw
	b.CAFile = filepath.Join(b.Dir, "ca.crt")
	for _, f := range []struct {
		name, typ string
		der       []byte
		mode      os.FileMode
	}{{"ca.crt", "CERTIFICATE", caDER, 0o644}, {"tls.crt", "CERTIFICATE", der, 0o644}, {"tls.key", "PRIVATE KEY", keyDER, 0o600}} {
		if err := os.WriteFile(filepath.Join(b.Dir, f.name), pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), f.mode); err != nil {
			return fmt.Errorf("harness: %w", err)
		}
	}
	return nil
}
