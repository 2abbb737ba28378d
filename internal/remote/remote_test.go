package remote_test

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/internal/remote"
)

// The client trusts the server through ca_file and sends the token file's
// current contents with each request.
func TestClientTLSAndBearerToken(t *testing.T) {
	var got []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writeFile(t, ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	token := filepath.Join(dir, "token")
	writeFile(t, token, "first\n")

	c, err := remote.Client("bundles", config.Service{URL: srv.URL, CAFile: ca, BearerTokenFile: token, Timeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	get := func() {
		t.Helper()
		resp, err := c.Do(context.Background(), http.MethodGet, "/b.tar.gz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	get()
	writeFile(t, token, "second")
	get()
	if want := []string{"Bearer first", "Bearer second"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("Authorization headers %q, want %q (the token file read again per request)", got, want)
	}
}

// Without ca_file the test server's certificate is not trusted.
func TestClientRefusesUntrustedServer(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	c, err := remote.Client("bundles", config.Service{URL: srv.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Do(context.Background(), http.MethodGet, "/"); err == nil {
		resp.Body.Close()
		t.Fatal("request to an untrusted server succeeded")
	}
}

// Every file the service names is read at start, as the client will
// read it: a bad one is an error naming the service and the key.
func TestClientBadFiles(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, "not a certificate\n")
	for _, tc := range []struct {
		name string
		s    config.Service
		want string
	}{
		{"missing token", config.Service{BearerTokenFile: "/nonexistent/token"}, "decision_log.service: bearer_token_file: open /nonexistent/token"},
		{"token is a directory", config.Service{BearerTokenFile: dir}, "decision_log.service: bearer_token_file: read " + dir},
		{"missing roots", config.Service{CAFile: "/nonexistent/ca.pem"}, "decision_log.service: ca_file: open /nonexistent/ca.pem"},
		{"roots that are none", config.Service{CAFile: garbage}, "decision_log.service: ca_file " + garbage + " holds no PEM certificate"},
		{"client certificate that is none", config.Service{ClientTLS: config.ClientTLS{CertFile: garbage, KeyFile: garbage}}, "decision_log.service: client_tls (cert_file " + garbage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.s.URL = "https://collector.example"
			_, err := remote.Client("decision_log.service", tc.s, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
