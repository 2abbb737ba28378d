package harness

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BundleServer is a real bundle service for authz.bundles: Debian's nginx
// (from $MESHID_NGINX) in the foreground, serving the files a test
// publishes, with nginx's own ETag and If-None-Match handling, optionally
// over TLS and behind a bearer token. The same files are served under
// NoETagPrefix without an ETag, as a server that has none would: every
// poll there downloads the whole bundle. Its error log is its process log
// in Env.Dir/logs, and its access log, one JSON object a request, is kept
// beside it for AccessLog.
type BundleServer struct {
	// Process is the running nginx; a new one after each Start.
	*Process
	// Addr is "IP:PORT", the same across Stop and Start.
	Addr string
	// Root is the directory served at "/": Publish writes into it.
	Root string
	// Dir holds nginx's configuration and temporary directories.
	Dir string
	// AccessLogPath is the access log (AccessLog reads it).
	AccessLogPath string
	// TokenFile holds BundleServerOptions.Token (0600), for a client's
	// bearer_token_file; "" without a token.
	TokenFile string

	env     *Env
	host    *Host
	scheme  string
	caFile  string
	conf    string
	mu      sync.Mutex
	mtimes  map[string]time.Time // the last mtime Publish gave each name
	running bool
}

// BundleServerOptions configures StartBundleServer.
type BundleServerOptions struct {
	// Name of the process and of its directory in Env.Dir; default
	// "bundle-server".
	Name string
	// Host runs nginx in that host's network namespace, on its bridge
	// address, where the other hosts reach it; nil runs it on loopback.
	Host *Host
	// CertFile and KeyFile serve HTTPS with that certificate (e.g.
	// svidtest's CA.WebCert for the address's IP); CAFile is what
	// verifies it, for the harness's own requests. Empty: plain HTTP.
	CertFile, KeyFile, CAFile string
	// Token, when set, is required as "Authorization: Bearer TOKEN" on
	// every request; any other gets 401.
	Token string
}

// NoETagPrefix is the path under which the server sends no ETag: Root's
// files again, so that one bundle can be polled both ways.
const NoETagPrefix = "/no-etag/"

// NginxPath returns the nginx binary: $MESHID_NGINX, or Debian's
// /usr/sbin/nginx that mk/nginx.mk installs.
func NginxPath() (string, error) {
	p := os.Getenv("MESHID_NGINX")
	if p == "" {
		p = "/usr/sbin/nginx"
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("harness: no nginx at %s: set $MESHID_NGINX or run `make tools` (mk/nginx.mk installs Debian's nginx-light): %w", p, err)
	}
	return p, nil
}

// StartBundleServer writes an nginx configuration of its own and starts
// nginx, and returns once it answers HTTP.
func (e *Env) StartBundleServer(ctx context.Context, o BundleServerOptions) (*BundleServer, error) {
	if o.Name == "" {
		o.Name = "bundle-server"
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, errors.New("harness: BundleServerOptions: CertFile and KeyFile go together")
	}
	if strings.ContainsAny(o.Token, "\"\\$ \t\n;{}") {
		return nil, fmt.Errorf("harness: BundleServerOptions.Token %q: no quotes, spaces, $ or braces (it goes into nginx's configuration)", o.Token)
	}
	dir, err := e.MkdirAll(o.Name)
	if err != nil {
		return nil, err
	}
	s := &BundleServer{
		Root: filepath.Join(dir, "www"), Dir: dir, AccessLogPath: filepath.Join(e.Dir, "logs", o.Name+"-access.log"),
		env: e, host: o.Host, scheme: "http", caFile: o.CAFile, conf: filepath.Join(dir, "nginx.conf"),
		mtimes: map[string]time.Time{},
	}
	if o.Host != nil {
		s.Addr = o.Host.FreeAddr()
	} else {
		s.Addr = e.FreeAddr()
	}
	for _, d := range []string{s.Root, filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("harness: %w", err)
		}
	}
	if o.Token != "" {
		s.TokenFile = filepath.Join(dir, "token")
		if err := os.WriteFile(s.TokenFile, []byte(o.Token+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("harness: %w", err)
		}
	}
	conf, err := s.config(o)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.conf, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	e.logf("harness: %s serves %s at %s (pid %d), access log %s", s.Name, s.Root, s.URL(), s.Pid(), s.AccessLogPath)
	return s, nil
}

// config is nginx.conf for o: one server, static files, and nothing of
// the machine's /etc/nginx.
func (s *BundleServer) config(o BundleServerOptions) (string, error) {
	// Workers drop root for the machine's unprivileged user; its group is
	// named differently across distributions (nogroup, nobody).
	worker := "nobody"
	u, err := user.Lookup(worker)
	if err != nil {
		return "", fmt.Errorf("harness: nginx workers: %w", err)
	}
	g, err := user.LookupGroupId(u.Gid)
	if err != nil {
		return "", fmt.Errorf("harness: nginx workers: %w", err)
	}
	tmp := filepath.Join(s.Dir, "tmp")
	var b strings.Builder
	fmt.Fprintf(&b, `# meshid test bundle server (test/harness/bundleserver.go)
daemon off;
worker_processes 1;
user %[1]s %[2]s;
pid %[3]s;
error_log stderr info;
events { worker_connections 256; }
http {
  types { application/gzip gz; application/json json; }
  default_type application/octet-stream;
  client_body_temp_path %[4]s/body;
  proxy_temp_path %[4]s/proxy;
  fastcgi_temp_path %[4]s/fastcgi;
  uwsgi_temp_path %[4]s/uwsgi;
  scgi_temp_path %[4]s/scgi;
  log_format bundles escape=json '{"time":"$msec","remote":"$remote_addr","method":"$request_method","path":"$uri","status":$status,"body_bytes":$body_bytes_sent,"bytes":$bytes_sent,"if_none_match":"$http_if_none_match","etag":"$sent_http_etag","user_agent":"$http_user_agent"}';
  access_log %[5]s bundles;
  server_tokens off;
  log_not_found off;
  etag on;
  server {
`, worker, g.Name, filepath.Join(s.Dir, "nginx.pid"), tmp, s.AccessLogPath)
	if o.CertFile != "" {
		s.scheme = "https"
		fmt.Fprintf(&b, "    listen %s ssl;\n    ssl_certificate %s;\n    ssl_certificate_key %s;\n", s.Addr, o.CertFile, o.KeyFile)
	} else {
		fmt.Fprintf(&b, "    listen %s;\n", s.Addr)
	}
	fmt.Fprintf(&b, "    root %s;\n", s.Root)
	for _, loc := range []struct{ path, extra string }{
		{"/", ""},
		{NoETagPrefix, fmt.Sprintf("      alias %s/;\n      etag off;\n", s.Root)},
	} {
		fmt.Fprintf(&b, "    location %s {\n%s", loc.path, loc.extra)
		if o.Token != "" {
			fmt.Fprintf(&b, "      if ($http_authorization != \"Bearer %s\") { return 401; }\n", o.Token)
		}
		b.WriteString("    }\n")
	}
	b.WriteString("  }\n}\n")
	return b.String(), nil
}

// MeshidBundle is one source of meshid.yaml's authz.bundles
// (docs/authz.md § Bundles), as MeshidOptions.Bundles takes it.
type MeshidBundle struct {
	Name    string `yaml:"name"`
	Service struct {
		URL             string `yaml:"url"`
		CAFile          string `yaml:"ca_file,omitempty"`
		BearerTokenFile string `yaml:"bearer_token_file,omitempty"`
		Timeout         string `yaml:"timeout,omitempty"`
	} `yaml:"service"`
	Resource string `yaml:"resource,omitempty"`
	Polling  struct {
		MinDelay           string `yaml:"min_delay,omitempty"`
		MaxDelay           string `yaml:"max_delay,omitempty"`
		LongPollingTimeout string `yaml:"long_polling_timeout,omitempty"`
	} `yaml:"polling,omitempty"`
	Signing  *MeshidBundleSigning `yaml:"signing,omitempty"`
	Unsigned bool                 `yaml:"unsigned,omitempty"`
}

// MeshidBundleSigning is a bundle source's signing section.
type MeshidBundleSigning struct {
	KeyID         string `yaml:"key_id"`
	Algorithm     string `yaml:"algorithm,omitempty"`
	PublicKeyFile string `yaml:"public_key_file"`
	Scope         string `yaml:"scope,omitempty"`
}

// Source is the bundle source for the file resource on this server (its
// URL, CA and token), polled every minDelay to maxDelay (whole seconds)
// and verified with the RSA public key in publicKeyFile under keyID; an
// empty publicKeyFile makes it unsigned: true.
func (s *BundleServer) Source(name, resource, keyID, publicKeyFile string, minDelay, maxDelay time.Duration) MeshidBundle {
	var b MeshidBundle
	b.Name, b.Resource = name, resource
	b.Service.URL, b.Service.CAFile, b.Service.BearerTokenFile = s.URL(), s.caFile, s.TokenFile
	b.Polling.MinDelay, b.Polling.MaxDelay = minDelay.String(), maxDelay.String()
	if publicKeyFile == "" {
		b.Unsigned = true
	} else {
		b.Signing = &MeshidBundleSigning{KeyID: keyID, Algorithm: "RS256", PublicKeyFile: publicKeyFile}
	}
	return b
}

// URL is the server's base URL, "http://IP:PORT" (https with TLS).
func (s *BundleServer) URL() string { return s.scheme + "://" + s.Addr }

// Publish makes data the file name (slash-separated, under Root) at once:
// it is written beside it and renamed over it, so nginx serves the old
// file or the new, never part of one. Its mtime is at least a second
// past the previous one's: nginx's ETag is mtime and size in seconds, and
// two bundles of one size published within a second would otherwise share
// an ETag, and a client holding the first would be told 304 for the
// second.
func (s *BundleServer) Publish(name string, data []byte) error {
	if !filepath.IsLocal(filepath.FromSlash(name)) {
		return fmt.Errorf("harness: Publish %q: not a path inside the served directory", name)
	}
	path := filepath.Join(s.Root, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	mtime := time.Now().Truncate(time.Second)
	if last, ok := s.mtimes[name]; ok && !mtime.After(last) {
		mtime = last.Add(time.Second)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".publish-*")
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	_, err = f.Write(data)
	err = errors.Join(err, f.Chmod(0o644), f.Close())
	if err == nil {
		err = os.Chtimes(f.Name(), mtime, mtime)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("harness: publish %s: %w", name, err)
	}
	s.mtimes[name] = mtime
	return nil
}

// Remove deletes the published file name: the server answers 404 for it.
func (s *BundleServer) Remove(name string) error {
	if err := os.Remove(filepath.Join(s.Root, filepath.FromSlash(name))); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return nil
}

// Stop stops nginx, as an outage does: nothing listens at Addr until
// Start. Stopping a stopped server is a no-op.
func (s *BundleServer) Stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.running {
		return nil
	}
	s.running = false
	return s.Process.Stop(5 * time.Second)
}

// Start starts nginx (again, after Stop) on the same address, with the
// same configuration and files, and waits until it answers HTTP.
func (s *BundleServer) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return nil
	}
	bin, err := NginxPath()
	if err != nil {
		return err
	}
	name := filepath.Base(s.Dir)
	// -e: the error log nginx writes before it has read the configuration
	// (by default /var/log/nginx/error.log, not ours to touch).
	p, err := s.env.Start(ctx, ProcSpec{Name: name, Path: bin, Host: s.host,
		Args: []string{"-p", s.Dir, "-c", s.conf, "-e", "stderr"}})
	if err != nil {
		return err
	}
	s.Process = p
	s.running = true
	ctx, cancel := context.WithTimeout(ctx, s.env.readyTimeout)
	defer cancel()
	for {
		// Any status will do (404, or 401 without the token): nginx
		// answers once its worker has the listener.
		status, err := s.status(ctx, "/.harness-ready")
		if err == nil && status != 0 {
			return nil
		}
		select {
		case <-p.Done():
			s.running = false
			return p.failure(errors.New("harness: nginx exited before it answered"))
		case <-ctx.Done():
			return p.failure(fmt.Errorf("harness: nginx at %s never answered: %w", s.URL(), err))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *BundleServer) status(ctx context.Context, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+path, nil)
	if err != nil {
		return 0, err
	}
	c := client
	if s.scheme == "https" {
		c, err = s.tlsClient()
		if err != nil {
			return 0, err
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// tlsClient verifies the server with CAFile, or not at all without one:
// the readiness probe only needs an answer.
func (s *BundleServer) tlsClient() (*http.Client, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.caFile == "" {
		conf.InsecureSkipVerify = true
	} else {
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			return nil, fmt.Errorf("harness: bundle server CA: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		conf.RootCAs.AppendCertsFromPEM(pem)
	}
	return &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: conf}}, nil
}

// AccessLine is one request in the bundle server's access log.
type AccessLine struct {
	Time   time.Time
	Remote string // the client's IP
	Method string
	Path   string // without the query
	Status int
	// BodyBytes is what nginx sent of the file (0 for a 304); Bytes is
	// everything it sent, headers included.
	BodyBytes   int64
	Bytes       int64
	IfNoneMatch string // the request's If-None-Match
	ETag        string // the response's ETag
	UserAgent   string
}

// AccessLogUntil is AccessLog once a line satisfies done, or after 5 s
// with whatever is logged by then: nginx writes a request's line after
// the response has gone, so a client that has just read its answer may
// not find the line yet.
func (s *BundleServer) AccessLogUntil(done func(AccessLine) bool) ([]AccessLine, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines, err := s.AccessLog()
		if err != nil || slices.ContainsFunc(lines, done) || time.Now().After(deadline) {
			return lines, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// AccessLog returns every request nginx has logged so far, in order,
// across Stop and Start.
func (s *BundleServer) AccessLog() ([]AccessLine, error) {
	f, err := os.Open(s.AccessLogPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	defer f.Close()
	var lines []AccessLine
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		var raw struct {
			Time        string `json:"time"`
			Remote      string `json:"remote"`
			Method      string `json:"method"`
			Path        string `json:"path"`
			Status      int    `json:"status"`
			BodyBytes   int64  `json:"body_bytes"`
			Bytes       int64  `json:"bytes"`
			IfNoneMatch string `json:"if_none_match"`
			ETag        string `json:"etag"`
			UserAgent   string `json:"user_agent"`
		}
		if err := json.Unmarshal(sc.Bytes(), &raw); err != nil {
			return nil, fmt.Errorf("harness: %s:%d: %w", s.AccessLogPath, n, err)
		}
		secs, err := strconv.ParseFloat(raw.Time, 64)
		if err != nil {
			return nil, fmt.Errorf("harness: %s:%d: time %q: %w", s.AccessLogPath, n, raw.Time, err)
		}
		lines = append(lines, AccessLine{
			Time:   time.UnixMilli(int64(secs * 1000)),
			Remote: raw.Remote, Method: raw.Method, Path: raw.Path, Status: raw.Status,
			BodyBytes: raw.BodyBytes, Bytes: raw.Bytes, IfNoneMatch: raw.IfNoneMatch, ETag: raw.ETag, UserAgent: raw.UserAgent,
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("harness: %s: %w", s.AccessLogPath, err)
	}
	return lines, nil
}
