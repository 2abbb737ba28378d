package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/meshid/meshid/test/authztest"
	"github.com/meshid/meshid/test/svidtest"
)

// bundleServerForTest is a BundleServer in an Env of its own that needs
// no meshid binaries.
func bundleServerForTest(t *testing.T, o BundleServerOptions) (*Env, *BundleServer) {
	t.Helper()
	if _, err := NginxPath(); err != nil {
		t.Skipf("%v", err)
	}
	e := forTest(t, Options{Logf: t.Logf, NoBinaries: true})
	s, err := e.StartBundleServer(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	return e, s
}

// fetch GETs url with headers ("If-None-Match", "Authorization") through c.
func fetch(t *testing.T, c *http.Client, url string, headers map[string]string) (status int, etag string, body []byte, err error) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("ETag"), body, err
}

func TestBundleServerServesWithETags(t *testing.T) {
	_, s := bundleServerForTest(t, BundleServerOptions{})
	url := s.URL() + "/bundles/mesh.tar.gz"
	first, second := bytes.Repeat([]byte("a"), 4096), bytes.Repeat([]byte("b"), 4096)

	if status, _, _, err := fetch(t, client, url, nil); err != nil || status != http.StatusNotFound {
		t.Fatalf("before Publish: %d %v, want 404", status, err)
	}
	if err := s.Publish("bundles/mesh.tar.gz", first); err != nil {
		t.Fatal(err)
	}
	status, etag, body, err := fetch(t, client, url, nil)
	if err != nil || status != http.StatusOK || !bytes.Equal(body, first) || etag == "" {
		t.Fatalf("GET: %d, etag %q, %d bytes, %v; want 200 with the file and an ETag", status, etag, len(body), err)
	}
	if status, _, body, err := fetch(t, client, url, map[string]string{"If-None-Match": etag}); err != nil || status != http.StatusNotModified || len(body) != 0 {
		t.Fatalf("conditional GET: %d, %d bytes, %v; want an empty 304", status, len(body), err)
	}
	// A bundle of the same size published within the same second still
	// changes the ETag, so the holder of the old one gets the new file.
	if err := s.Publish("bundles/mesh.tar.gz", second); err != nil {
		t.Fatal(err)
	}
	status, etag2, body, err := fetch(t, client, url, map[string]string{"If-None-Match": etag})
	if err != nil || status != http.StatusOK || !bytes.Equal(body, second) || etag2 == etag {
		t.Fatalf("GET after a new Publish with the old ETag: %d, etag %q (old %q), %v; want 200 with the new file", status, etag2, etag, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(s.Root, "bundles")); len(entries) != 1 {
		t.Errorf("served dir holds %d files, want only the bundle (no temporary files left)", len(entries))
	}

	lines, err := s.AccessLogUntil(func(l AccessLine) bool { return l.Status == http.StatusOK && l.IfNoneMatch == etag })
	if err != nil {
		t.Fatal(err)
	}
	var statuses []int
	for _, l := range lines {
		if l.Path == "/bundles/mesh.tar.gz" {
			statuses = append(statuses, l.Status)
		}
	}
	if want := []int{404, 200, 304, 200}; !slices.Equal(statuses, want) {
		t.Fatalf("access log statuses %v, want %v:\n%+v", statuses, want, lines)
	}
	ok, notModified := lines[len(lines)-3], lines[len(lines)-2]
	if ok.BodyBytes != 4096 || ok.Bytes <= 4096 || ok.ETag != etag || ok.Remote != "127.0.0.1" || ok.Method != "GET" {
		t.Errorf("200 line %+v: want 4096 body bytes, more in all, ETag %s, from 127.0.0.1", ok, etag)
	}
	if notModified.BodyBytes != 0 || notModified.Bytes == 0 || notModified.Bytes >= 4096 || notModified.IfNoneMatch != etag {
		t.Errorf("304 line %+v: want no body, a few header bytes, If-None-Match %s", notModified, etag)
	}
	t.Logf("a poll costs %d bytes with a 200 and %d with a 304", ok.Bytes, notModified.Bytes)

	// Under NoETagPrefix the same file comes whole every time.
	for range 2 {
		status, etag, body, err := fetch(t, client, s.URL()+NoETagPrefix+"bundles/mesh.tar.gz", map[string]string{"If-None-Match": etag2})
		if err != nil || status != http.StatusOK || etag != "" || !bytes.Equal(body, second) {
			t.Fatalf("GET without ETags: %d, etag %q, %d bytes, %v; want a 200 with the file and no ETag", status, etag, len(body), err)
		}
	}

	// Stopped, nothing answers; started again, the same address serves
	// the same files.
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := fetch(t, client, url, nil); err == nil {
		t.Fatal("a stopped bundle server answered")
	}
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if status, _, body, err := fetch(t, client, url, nil); err != nil || status != http.StatusOK || !bytes.Equal(body, second) {
		t.Fatalf("after Start: %d, %d bytes, %v; want 200 with the last file", status, len(body), err)
	}
	if err := s.Publish("../escape", first); err == nil {
		t.Error("Publish wrote outside the served directory")
	}
}

func TestBundleServerTLSAndToken(t *testing.T) {
	ca := svidtest.NewCA(t, "example.org")
	cert, key := ca.WebCert(t, t.TempDir(), "127.0.0.1")
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, ca.RootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, s := bundleServerForTest(t, BundleServerOptions{CertFile: cert, KeyFile: key, CAFile: caFile, Token: "s3cret-token"})
	if err := s.Publish("b.tar.gz", []byte("bundle")); err != nil {
		t.Fatal(err)
	}
	if token, err := os.ReadFile(s.TokenFile); err != nil || string(token) != "s3cret-token\n" {
		t.Fatalf("token file %s: %q %v", s.TokenFile, token, err)
	}
	if src := s.Source("mesh", "b.tar.gz", "", "", time.Second, 2*time.Second); src.Service.URL != s.URL() || src.Service.BearerTokenFile != s.TokenFile || src.Service.CAFile != caFile || !src.Unsigned {
		t.Errorf("Source: %+v", src)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Root)
	c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true, TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := s.URL() + "/b.tar.gz"
	if url[:8] != "https://" {
		t.Fatalf("URL %s, want https", url)
	}
	for _, tt := range []struct {
		auth   string
		status int
	}{{"", 401}, {"Bearer wrong", 401}, {"Bearer s3cret-token", 200}} {
		status, _, body, err := fetch(t, c, url, map[string]string{"Authorization": tt.auth})
		if err != nil || status != tt.status {
			t.Errorf("Authorization %q: %d %v, want %d", tt.auth, status, err, tt.status)
		}
		if status == 200 && string(body) != "bundle" {
			t.Errorf("body %q", body)
		}
	}
	// The certificate is checked: a client without the CA refuses it.
	if _, _, _, err := fetch(t, client, url, nil); err == nil {
		t.Error("a client that does not trust the CA got an answer")
	}
}

func TestBundleServerOnHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("hosts are network namespaces and need root")
	}
	if _, err := NginxPath(); err != nil {
		t.Skipf("%v", err)
	}
	e := forTest(t, Options{Logf: t.Logf, NoBinaries: true})
	hosts, err := e.Hosts(t.Context(), "bundles", "node")
	if err != nil {
		t.Fatal(err)
	}
	s, err := e.StartBundleServer(t.Context(), BundleServerOptions{Host: hosts[0]})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Publish("b.tar.gz", []byte("bundle")); err != nil {
		t.Fatal(err)
	}
	// Another host reaches it across the bridge, and the log says who:
	// the client's connections are dialled from that host.
	fromNode := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = hosts[1].Do(func() error {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
	if status, _, _, err := fetch(t, fromNode, s.URL()+"/b.tar.gz", nil); err != nil || status != 200 {
		t.Fatalf("node → bundle server: %d %v", status, err)
	}
	lines, err := s.AccessLogUntil(func(l AccessLine) bool { return l.Remote == hosts[1].IP })
	if err != nil || len(lines) == 0 {
		t.Fatalf("access log %v, %v", lines, err)
	}
	if last := lines[len(lines)-1]; last.Remote != hosts[1].IP || last.Status != 200 {
		t.Errorf("last request %+v, want a 200 to %s", last, hosts[1].IP)
	}
}

// TestBuildBundle builds with the real meshid binary and reads the result
// back as OPA would, with the right verification key and with another.
func TestBuildBundle(t *testing.T) {
	e := ForTest(t)
	dir := authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData})
	priv, pub, err := e.SigningKeyPair("signing")
	if err != nil {
		t.Fatal(err)
	}
	_, otherPub, err := e.SigningKeyPair("other")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{priv, pub} {
		if info, err := os.Stat(f); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", f, info, err)
		}
	}
	data, err := e.BuildBundle(t.Context(), dir, BundleBuild{Revision: "r1", SigningKey: priv, KeyID: "mesh"})
	if err != nil {
		t.Fatal(err)
	}
	verify := func(pubFile string) (bundle.Bundle, error) {
		key, err := os.ReadFile(pubFile)
		if err != nil {
			t.Fatal(err)
		}
		vc := bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{"mesh": {Key: string(key), Algorithm: "RS256"}}, "mesh", "", nil)
		return bundle.NewReader(bytes.NewReader(data)).WithBundleVerificationConfig(vc).Read()
	}
	b, err := verify(pub)
	if err != nil {
		t.Fatal(err)
	}
	if b.Manifest.Revision != "r1" || !slices.Equal(*b.Manifest.Roots, []string{"envoy", "methods"}) {
		t.Errorf("manifest %+v, want revision r1, roots envoy, methods", b.Manifest)
	}
	if _, err := verify(otherPub); err == nil {
		t.Error("the bundle verified with another key")
	}
	if _, err := e.BuildBundle(t.Context(), dir, BundleBuild{Roots: []string{"nothing"}}); err == nil {
		t.Error("a build meshid refuses gave a bundle")
	}
}
