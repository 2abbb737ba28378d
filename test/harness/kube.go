package harness

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// KubeAPI is a real kube-apiserver with its own etcd, on loopback, started
// by an Env and stopped with it. There is no kubelet, scheduler or
// controller manager: objects are stored and validated, pods never run.
type KubeAPI struct {
	// URL is the API server's https://127.0.0.1:PORT.
	URL string
	// Token authenticates as a member of system:masters.
	Token string

	client *http.Client
	// resources caches discovery: "apps/v1 DaemonSet" -> its resource.
	resources map[string]kubeResource
}

type kubeResource struct {
	name       string // "daemonsets"
	namespaced bool
}

// KubeBinaries finds kube-apiserver and etcd: $MESHID_KUBE_APISERVER and
// $MESHID_ETCD, else what `make kube-tools` built into <repo>/.tools/bin.
func KubeBinaries() (apiserver, etcd string, err error) {
	find := func(env, glob string) (string, error) {
		if p := os.Getenv(env); p != "" {
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("harness: $%s: %w", env, err)
			}
			return p, nil
		}
		if root, err := RepoRoot(); err == nil {
			if m, _ := filepath.Glob(filepath.Join(root, ".tools/bin", glob)); len(m) > 0 {
				return m[len(m)-1], nil
			}
		}
		return "", fmt.Errorf("harness: no %s: run `make kube-tools` (builds kube-apiserver and etcd into .tools/bin) or set $%s", strings.TrimSuffix(glob, "-v*"), env)
	}
	if apiserver, err = find("MESHID_KUBE_APISERVER", "kube-apiserver-v*"); err != nil {
		return "", "", err
	}
	if etcd, err = find("MESHID_ETCD", "etcd-v*"); err != nil {
		return "", "", err
	}
	return apiserver, etcd, nil
}

// StartKubeAPI starts etcd and kube-apiserver in Env.Dir/kube and waits
// until the API server is ready: serving certificate from a CA of its own,
// a static token for the test, RBAC authorization, privileged pods allowed
// (meshid's DaemonSet is one).
func (e *Env) StartKubeAPI(ctx context.Context) (*KubeAPI, error) {
	apiserverBin, etcdBin, err := KubeBinaries()
	if err != nil {
		return nil, err
	}
	dir, err := e.MkdirAll("kube")
	if err != nil {
		return nil, err
	}
	pki, err := writeKubePKI(dir)
	if err != nil {
		return nil, err
	}

	etcdURL := "http://" + e.FreeAddr()
	etcd, err := e.Start(ctx, ProcSpec{Name: "etcd", Path: etcdBin, Args: []string{
		"-data-dir", filepath.Join(dir, "etcd"), "-listen-client", etcdURL, "-listen-peer", "http://" + e.FreeAddr(),
	}})
	if err != nil {
		return nil, err
	}
	if err := e.waitReady(ctx, etcd, etcdURL+"/health", http.StatusOK); err != nil {
		return nil, err
	}

	addr := e.FreeAddr()
	host, port, _ := net.SplitHostPort(addr)
	apiserver, err := e.Start(ctx, ProcSpec{Name: "kube-apiserver", Path: apiserverBin, Args: []string{
		"--etcd-servers=" + etcdURL,
		"--bind-address=" + host,
		"--advertise-address=" + host,
		"--secure-port=" + port,
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--tls-cert-file=" + pki.serverCert,
		"--tls-private-key-file=" + pki.serverKey,
		"--token-auth-file=" + pki.tokens,
		"--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + pki.saKey,
		"--service-account-signing-key-file=" + pki.saKey,
		"--service-cluster-ip-range=10.96.0.0/16",
		"--allow-privileged=true",
		// The kubernetes Service would point at 127.0.0.1, which the
		// reconciler refuses; nothing here needs it.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}})
	if err != nil {
		return nil, err
	}
	k := &KubeAPI{
		URL:   "https://" + addr,
		Token: pki.token,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pki.pool, MinVersion: tls.VersionTLS12},
		}},
		resources: map[string]kubeResource{},
	}
	// /readyz answers 200 only once every post-start hook ran, the RBAC
	// bootstrap roles and the system priority classes included.
	if err := e.waitKubeReady(ctx, apiserver, k); err != nil {
		return nil, err
	}
	return k, nil
}

func (e *Env) waitKubeReady(ctx context.Context, p *Process, k *KubeAPI) error {
	ctx, cancel := context.WithTimeout(ctx, 3*e.readyTimeout)
	defer cancel()
	var last string
	for {
		status, body, err := k.Do(ctx, http.MethodGet, "/readyz", nil)
		if err == nil && status == http.StatusOK {
			return nil
		}
		last = fmt.Sprint(status, " ", snippet(body), err)
		select {
		case <-p.Done():
			return p.failure(fmt.Errorf("harness: kube-apiserver exited before it was ready (last /readyz: %s)", last))
		case <-ctx.Done():
			return p.failure(fmt.Errorf("harness: kube-apiserver not ready: %w (last /readyz: %s)", ctx.Err(), last))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Do sends one request with the test's token; body, when not nil, is JSON.
func (k *KubeAPI) Do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, k.URL+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.Token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, out, err
}

// KubeObject is one manifest object, as JSON, with where it came from.
type KubeObject struct {
	APIVersion string
	Kind       string
	Namespace  string
	Name       string
	// Source is "file:line" of the object's document, for messages.
	Source string
	JSON   []byte
}

func (o KubeObject) String() string {
	if o.Namespace != "" {
		return fmt.Sprintf("%s %s/%s (%s)", o.Kind, o.Namespace, o.Name, o.Source)
	}
	return fmt.Sprintf("%s %s (%s)", o.Kind, o.Name, o.Source)
}

// CreateOptions chooses how Create asks the API server.
type CreateOptions struct {
	// DryRun validates and admits the object without storing it.
	DryRun bool
}

// Create creates the object with strict field validation
// (fieldValidation=Strict: an unknown or duplicated field is an error,
// not dropped) and returns the object the server stored. The error is the
// API server's own message, prefixed with the object and its source.
func (k *KubeAPI) Create(ctx context.Context, o KubeObject, opts CreateOptions) ([]byte, error) {
	path, err := k.collectionPath(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o, err)
	}
	q := url.Values{"fieldValidation": {"Strict"}}
	if opts.DryRun {
		q.Set("dryRun", "All")
	}
	status, body, err := k.Do(ctx, http.MethodPost, path+"?"+q.Encode(), o.JSON)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o, err)
	}
	if status != http.StatusCreated && status != http.StatusOK {
		return nil, fmt.Errorf("%s: %d %s", o, status, statusMessage(body))
	}
	return body, nil
}

// Get returns the stored object at an API path such as
// /apis/apps/v1/namespaces/NS/daemonsets/NAME.
func (k *KubeAPI) Get(ctx context.Context, path string) ([]byte, error) {
	status, body, err := k.Do(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", path, status, statusMessage(body))
	}
	return body, nil
}

// ObjectPath is where the API server keeps the object.
func (k *KubeAPI) ObjectPath(ctx context.Context, o KubeObject) (string, error) {
	path, err := k.collectionPath(ctx, o)
	if err != nil {
		return "", err
	}
	return path + "/" + o.Name, nil
}

// statusMessage is the message of a metav1.Status answer, or the body.
func statusMessage(body []byte) string {
	var s struct {
		Kind    string `json:"kind"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &s) == nil && s.Kind == "Status" && s.Message != "" {
		return s.Message
	}
	return snippet(body)
}

// collectionPath finds the object's resource by discovery, as kubectl
// does, so any kind the server serves can be created.
func (k *KubeAPI) collectionPath(ctx context.Context, o KubeObject) (string, error) {
	if o.APIVersion == "" || o.Kind == "" {
		return "", errors.New("no apiVersion or kind")
	}
	prefix := "/apis/" + o.APIVersion
	if !strings.Contains(o.APIVersion, "/") {
		prefix = "/api/" + o.APIVersion
	}
	key := o.APIVersion + " " + o.Kind
	r, ok := k.resources[key]
	if !ok {
		body, err := k.Get(ctx, prefix)
		if err != nil {
			return "", err
		}
		var list struct {
			Resources []struct {
				Name       string `json:"name"`
				Kind       string `json:"kind"`
				Namespaced bool   `json:"namespaced"`
			} `json:"resources"`
		}
		if err := json.Unmarshal(body, &list); err != nil {
			return "", fmt.Errorf("discovery %s: %w", prefix, err)
		}
		for _, res := range list.Resources {
			if res.Kind == o.Kind && !strings.Contains(res.Name, "/") {
				r = kubeResource{name: res.Name, namespaced: res.Namespaced}
				ok = true
			}
		}
		if !ok {
			return "", fmt.Errorf("the API server serves no kind %s in %s", o.Kind, o.APIVersion)
		}
		k.resources[key] = r
	}
	if !r.namespaced {
		return prefix + "/" + r.name, nil
	}
	if o.Namespace == "" {
		return "", fmt.Errorf("%s is namespaced, and metadata.namespace is not set", o.Kind)
	}
	return prefix + "/namespaces/" + o.Namespace + "/" + r.name, nil
}

type kubePKI struct {
	serverCert, serverKey, saKey, tokens string
	token                                string
	pool                                 *x509.CertPool
}

// writeKubePKI writes what kube-apiserver needs: a CA, a serving
// certificate for 127.0.0.1 signed by it, a service-account signing key
// and a token file naming one admin.
func writeKubePKI(dir string) (kubePKI, error) {
	var p kubePKI
	ca, srvDER, srvKey, err := servingCert("meshid test kube CA", "kube-apiserver", []net.IP{net.IPv4(127, 0, 0, 1)}, "localhost")
	if err != nil {
		return p, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return p, err
	}
	p.token = fmt.Sprintf("%x", tok)
	p.serverCert = filepath.Join(dir, "apiserver.crt")
	p.serverKey = filepath.Join(dir, "apiserver.key")
	p.saKey = filepath.Join(dir, "sa.key")
	p.tokens = filepath.Join(dir, "tokens.csv")
	files := []struct {
		path string
		data func() ([]byte, error)
	}{
		{p.serverCert, func() ([]byte, error) { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}), nil }},
		{p.serverKey, func() ([]byte, error) { return ecKeyPEM(srvKey) }},
		{p.saKey, func() ([]byte, error) { return ecKeyPEM(saKey) }},
		// token,user,uid,"groups"
		{p.tokens, func() ([]byte, error) {
			return fmt.Appendf(nil, "%s,meshid-test-admin,1,\"system:masters\"\n", p.token), nil
		}},
	}
	for _, f := range files {
		data, err := f.data()
		if err != nil {
			return p, err
		}
		if err := os.WriteFile(f.path, data, 0o600); err != nil {
			return p, err
		}
	}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca)
	return p, nil
}

func ecKeyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}
