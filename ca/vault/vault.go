// Package vault is an upstream authority for package ca: a Vault-API PKI
// secrets engine (HashiCorp Vault, OpenBao) that signs each meshid node's
// intermediate CA (<pki_mount>/root/sign-intermediate) and whose issuers
// are the trust domain's roots. It logs in (token, AppRole or Kubernetes),
// talks to the engine and checks the shape of its answers; whether an
// answer is trusted, and when to ask, are the ca package's to decide.
package vault

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// Options configures a Client; the fields are ca.upstream.vault's keys.
type Options struct {
	Address   string // https://pki.example:8200
	PKIMount  string // the PKI secrets engine's path, default "pki"
	CAFile    string // PEM roots to verify the engine's TLS certificate; empty: the system's
	Namespace string // sent as X-Vault-Namespace when set

	// One way to log in. Token: TokenFile, read at each login, or
	// $VAULT_TOKEN when empty. AppRole and Kubernetes log in to their
	// auth mount and use the token they are given until it expires or
	// is refused.
	TokenFile  string
	AppRole    *AppRole
	Kubernetes *Kubernetes
}

// AppRole logs in with a role ID and a secret ID read from files.
type AppRole struct {
	RoleIDFile, SecretIDFile string
	Mount                    string // default "approle"
}

// Kubernetes logs in with the pod's service account token.
type Kubernetes struct {
	Role      string
	TokenFile string // default DefaultKubernetesTokenFile
	Mount     string // default "kubernetes"
}

// DefaultKubernetesTokenFile is where Kubernetes mounts a pod's service
// account token.
const DefaultKubernetesTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// Client is one engine's PKI mount. It is safe for concurrent use.
type Client struct {
	o   Options
	api *api.Client

	mu      sync.Mutex
	token   string
	expires time.Time // zero: a token that does not expire, or a static one
}

// New checks o and builds a client; it does not contact the engine.
func New(o Options) (*Client, error) {
	if o.PKIMount == "" {
		o.PKIMount = "pki"
	}
	o.PKIMount = strings.Trim(o.PKIMount, "/")
	if o.AppRole != nil && o.AppRole.Mount == "" {
		o.AppRole.Mount = "approle"
	}
	if k := o.Kubernetes; k != nil {
		if k.Mount == "" {
			k.Mount = "kubernetes"
		}
		if k.TokenFile == "" {
			k.TokenFile = DefaultKubernetesTokenFile
		}
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		data, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca.upstream.vault.ca_file: %w", err)
		}
		tlsConf.RootCAs = x509.NewCertPool()
		if !tlsConf.RootCAs.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("ca.upstream.vault.ca_file %s: no PEM certificate", o.CAFile)
		}
	}
	// The client is built from these settings alone: the VAULT_*
	// variables the library would read (VAULT_SKIP_VERIFY among them) do
	// not weaken what the config says. Retries are the ca package's, with
	// its backoff.
	cfg := &api.Config{
		Address: o.Address,
		HttpClient: &http.Client{
			Transport: &http.Transport{TLSClientConfig: tlsConf, Proxy: http.ProxyFromEnvironment,
				TLSHandshakeTimeout: 10 * time.Second, MaxIdleConns: 2, IdleConnTimeout: time.Minute},
			// The library follows the engine's redirects itself.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		MaxRetries: 0,
		Timeout:    30 * time.Second,
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("ca.upstream.vault.address %q: %w", o.Address, err)
	}
	c.ClearToken()
	if o.Namespace != "" {
		c.SetNamespace(o.Namespace)
	} else {
		c.ClearNamespace()
	}
	cl := &Client{o: o, api: c}
	if o.TokenFile == "" && o.AppRole == nil && o.Kubernetes == nil {
		if cl.token = os.Getenv(api.EnvVaultToken); cl.token == "" {
			return nil, errors.New("ca.upstream.vault: no way to log in: set token_file, approle or kubernetes, or $VAULT_TOKEN")
		}
	}
	return cl, nil
}

func (c *Client) String() string {
	return fmt.Sprintf("ca.upstream.vault %s/v1/%s", strings.TrimRight(c.o.Address, "/"), c.o.PKIMount)
}

// SignIntermediate sends csr to <pki_mount>/root/sign-intermediate and
// returns the intermediate, then the certificates of its chain that are
// not self-signed roots.
func (c *Client) SignIntermediate(ctx context.Context, csr []byte, ttl time.Duration) ([]*x509.Certificate, error) {
	path := c.o.PKIMount + "/root/sign-intermediate"
	s, err := c.write(ctx, path, map[string]any{
		"csr":                  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		"use_csr_values":       true, // the subject and the trust domain's URI SAN meshid asked for
		"exclude_cn_from_sans": true,
		"max_path_length":      0, // it signs workloads, never further CAs
		"ttl":                  fmt.Sprintf("%ds", int64(ttl/time.Second)),
	})
	if err != nil {
		return nil, err
	}
	if s == nil || s.Data == nil {
		return nil, fmt.Errorf("%s: empty answer to %s: is %q a PKI secrets engine?", c, path, c.o.PKIMount)
	}
	certs, err := pemField(s.Data, "certificate")
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", c, path, err)
	}
	chain := certs[:1]
	if _, ok := s.Data["ca_chain"]; ok {
		above, err := pemField(s.Data, "ca_chain")
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", c, path, err)
		}
		for _, a := range above {
			if !a.Equal(certs[0]) && !selfSigned(a) {
				chain = append(chain, a)
			}
		}
	}
	return chain, nil
}

// Roots returns the top of every issuer's chain on the mount: after a
// root rotation (a new issuer), the old root and the new one, until the
// old issuer is deleted.
func (c *Client) Roots(ctx context.Context) ([]*x509.Certificate, error) {
	list := c.o.PKIMount + "/issuers"
	s, err := c.call(ctx, func(ctx context.Context) (*api.Secret, error) { return c.api.Logical().ListWithContext(ctx, list) }, "LIST "+list)
	if err != nil {
		return nil, err
	}
	var ids []any
	if s != nil && s.Data != nil {
		ids, _ = s.Data["keys"].([]any)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%s: LIST %s found no issuer: is %q a PKI secrets engine with a root?", c, list, c.o.PKIMount)
	}
	var roots []*x509.Certificate
	for _, id := range ids {
		path := fmt.Sprintf("%s/issuer/%v/json", c.o.PKIMount, id)
		s, err := c.call(ctx, func(ctx context.Context) (*api.Secret, error) { return c.api.Logical().ReadWithContext(ctx, path) }, "GET "+path)
		if err != nil {
			return nil, err
		}
		if s == nil || s.Data == nil {
			return nil, fmt.Errorf("%s: GET %s: empty answer", c, path)
		}
		chain, err := pemField(s.Data, "ca_chain")
		if err != nil {
			if chain, err = pemField(s.Data, "certificate"); err != nil {
				return nil, fmt.Errorf("%s: GET %s: %w", c, path, err)
			}
		}
		top := chain[len(chain)-1]
		if !containsCert(roots, top) {
			roots = append(roots, top)
		}
	}
	return roots, nil
}

func (c *Client) write(ctx context.Context, path string, data map[string]any) (*api.Secret, error) {
	return c.call(ctx, func(ctx context.Context) (*api.Secret, error) {
		return c.api.Logical().WriteWithContext(ctx, path, data)
	}, "PUT "+path)
}

// call runs one request with a token, logging in first when there is
// none and once again when a token it logged in for is refused (it may
// have expired or been revoked). Calls are one at a time: a node makes a
// few an hour, and the token is the client's. Errors name the engine, the
// request and what to fix.
func (c *Client) call(ctx context.Context, do func(context.Context) (*api.Secret, error), what string) (*api.Secret, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if err := c.loginLocked(ctx, attempt > 0); err != nil {
			return nil, err
		}
		c.api.SetToken(c.token)
		s, err := do(ctx)
		if err == nil {
			return s, nil
		}
		var re *api.ResponseError
		if attempt == 0 && c.relogs() && errors.As(err, &re) && re.StatusCode == http.StatusForbidden {
			continue
		}
		return nil, c.explain(what, err)
	}
}

// explain turns a failed request into an error that says what to fix.
func (c *Client) explain(what string, err error) error {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return fmt.Errorf("%s: %s: engine unreachable: %w", c, what, err)
	}
	msg := strings.Join(re.Errors, "; ")
	// Some answers wrap one message as a list ("1 error occurred:\n\t* permission denied").
	if _, rest, ok := strings.Cut(msg, "occurred:"); ok {
		msg = rest
	}
	msg = strings.Join(strings.Fields(strings.ReplaceAll(msg, "* ", "")), " ")
	switch re.StatusCode {
	case http.StatusForbidden:
		return fmt.Errorf("%s: %s: permission denied (HTTP 403: %s): check the token and that its policy allows %s", c, what, msg, what)
	case http.StatusNotFound:
		return fmt.Errorf("%s: %s: not found (HTTP 404: %s): is %q the path of a PKI secrets engine?", c, what, msg, c.o.PKIMount)
	}
	return fmt.Errorf("%s: %s: HTTP %d: %s", c, what, re.StatusCode, msg)
}

// pemField parses the PEM certificates of a response field, a string or
// a list of strings.
func pemField(data map[string]any, field string) ([]*x509.Certificate, error) {
	var blocks []string
	switch v := data[field].(type) {
	case string:
		blocks = []string{v}
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok {
				blocks = append(blocks, s)
			}
		}
	}
	var certs []*x509.Certificate
	for _, b := range blocks {
		rest := []byte(b)
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", field, err)
			}
			certs = append(certs, cert)
		}
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("no PEM certificate in field %s", field)
	}
	return certs, nil
}

func selfSigned(c *x509.Certificate) bool {
	return c.CheckSignatureFrom(c) == nil
}

func containsCert(certs []*x509.Certificate, c *x509.Certificate) bool {
	for _, e := range certs {
		if e.Equal(c) {
			return true
		}
	}
	return false
}

// LookupSelf asks the engine about the client's own token: the cheapest
// authenticated call, for checking a login (and as a benchmark's
// baseline).
func (c *Client) LookupSelf(ctx context.Context) error {
	_, err := c.call(ctx, func(ctx context.Context) (*api.Secret, error) {
		return c.api.Logical().ReadWithContext(ctx, "auth/token/lookup-self")
	}, "GET auth/token/lookup-self")
	return err
}
