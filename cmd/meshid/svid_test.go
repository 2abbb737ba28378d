package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// testCA mints X509-SVIDs for tests: a self-signed root and leaves with a
// chosen validity.
type testCA struct {
	td     spiffeid.TrustDomain
	root   *x509.Certificate
	key    *ecdsa.PrivateKey
	serial int64
}

func newTestCA(t *testing.T, td string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"meshid test"}, CommonName: "root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{td: spiffeid.RequireTrustDomainFromString(td), root: root, key: key, serial: 100}
}

func (ca *testCA) svid(t *testing.T, path string, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := spiffeid.RequireFromPath(ca.td, path)
	u, _ := url.Parse(id.String())
	ca.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

func (ca *testCA) context(svids ...*x509svid.SVID) *workloadapi.X509Context {
	return &workloadapi.X509Context{SVIDs: svids, Bundles: x509bundle.NewSet(x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.root}))}
}

func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "svid_key.pem")
	if err := writeFileAtomic(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Fatalf("content %q, want new", b)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if err := writeFileAtomic(filepath.Join(dir, "bundle.pem"), []byte("b"), 0o644); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "bundle.pem")); fi.Mode().Perm() != 0o644 {
		t.Fatalf("bundle mode %v, want 0644", fi.Mode().Perm())
	}
	assertOnlyFiles(t, dir, "bundle.pem", "svid_key.pem")
}

func TestWriteFileAtomicFailures(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) string // returns the target path
		want  []string
	}{
		{"missing directory", func(t *testing.T, dir string) string {
			return filepath.Join(dir, "nope", "svid.pem")
		}, []string{"nope/svid.pem", "does not exist"}},
		{"target is a directory", func(t *testing.T, dir string) string {
			// The temporary file is written, the rename fails: it must go.
			if err := os.Mkdir(filepath.Join(dir, "svid.pem"), 0o755); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "svid.pem")
		}, []string{"svid.pem: replace it"}},
		{"unwritable directory", func(t *testing.T, dir string) string {
			if os.Geteuid() == 0 {
				t.Skip("root writes anywhere; the e2e test covers this as a workload uid")
			}
			ro := filepath.Join(dir, "ro")
			if err := os.Mkdir(ro, 0o555); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(ro, "svid.pem")
		}, []string{"ro/svid.pem", "permission denied", "choose a directory it owns"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tt.setup(t, dir)
			err := writeFileAtomic(path, []byte("data"), 0o644)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), ".tmp-") {
				t.Errorf("error %q names the temporary file", err)
			}
			// No temporary file anywhere under dir.
			filepath.WalkDir(dir, func(p string, d os.DirEntry, _ error) error {
				if d != nil && strings.Contains(d.Name(), ".tmp-") {
					t.Errorf("left behind %s", p)
				}
				return nil
			})
		})
	}
}

func assertOnlyFiles(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("%s holds %v, want %v", dir, got, want)
	}
}

func TestSVIDFilesWrite(t *testing.T) {
	ca := newTestCA(t, "example.org")
	other := newTestCA(t, "other.org")
	now := time.Now()
	s := ca.svid(t, "/app", now.Add(-10*time.Second), now.Add(30*time.Second))
	set := x509bundle.NewSet(
		x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.root}),
		x509bundle.FromX509Authorities(other.td, []*x509.Certificate{other.root}),
	)
	for _, federated := range []bool{false, true} {
		dir := t.TempDir()
		cert, key, bundle := "svid.pem", "svid_key.pem", "bundle.pem"
		f := svidFiles{dir: &dir, cert: &cert, key: &key, bundle: &bundle, federated: &federated}
		paths, err := f.write(s, set)
		if err != nil {
			t.Fatal(err)
		}
		if len(paths) != 3 {
			t.Fatalf("wrote %v", paths)
		}
		got, err := x509svid.Load(filepath.Join(dir, cert), filepath.Join(dir, key))
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != s.ID || !got.Certificates[0].Equal(s.Certificates[0]) {
			t.Fatalf("svid.pem holds %s", got.ID)
		}
		if fi, _ := os.Stat(filepath.Join(dir, key)); fi.Mode().Perm() != 0o600 {
			t.Fatalf("key mode %v", fi.Mode().Perm())
		}
		roots, err := x509bundle.Load(ca.td, filepath.Join(dir, bundle))
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{false: 1, true: 2}[federated]; len(roots.X509Authorities()) != want {
			t.Fatalf("federated=%v: bundle.pem holds %d roots, want %d", federated, len(roots.X509Authorities()), want)
		}
	}
}

func TestSVIDReport(t *testing.T) {
	ca := newTestCA(t, "example.org")
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	fresh := ca.svid(t, "/ns/demo/sa/app", now.Add(-10*time.Second), now.Add(30*time.Second))
	old := ca.svid(t, "/ns/demo/sa/old", now.Add(-40*time.Second), now.Add(5*time.Second))
	c := ca.context(fresh, old)
	r := svidReport{Bundles: bundleInfos(c.Bundles)}
	for _, s := range c.SVIDs {
		r.SVIDs = append(r.SVIDs, describeSVID(s, now))
	}

	var human bytes.Buffer
	printSVIDReport(&human, r, now)
	for _, want := range []string{
		"SPIFFE ID  spiffe://example.org/ns/demo/sa/app\n",
		"Expires    in 30s (2026-11-23T12:00:30Z)\n",
		"Chain      1 certificate(s)\n",
		"  leaf  spiffe://example.org/ns/demo/sa/app  issuer \"CN=root,O=meshid test\"",
		"Expires    in 5s (2026-11-23T12:00:05Z)  WARNING: past 3/4 of its life and not renewed\n",
		"Bundle     example.org: 1 root(s)\n",
	} {
		if !strings.Contains(human.String(), want) {
			t.Errorf("human output lacks %q:\n%s", want, human.String())
		}
	}

	var js bytes.Buffer
	if err := writeJSON(&js, r); err != nil {
		t.Fatal(err)
	}
	var back struct {
		SVIDs []struct {
			SPIFFEID  string `json:"spiffe_id"`
			ExpiresIn int64  `json:"expires_in_seconds"`
			Past      bool   `json:"past_renewal"`
			Chain     []struct {
				URIs []string `json:"uri_sans"`
			} `json:"chain"`
		} `json:"svids"`
		Bundles []struct {
			TrustDomain string `json:"trust_domain"`
		} `json:"bundles"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.SVIDs) != 2 || back.SVIDs[0].SPIFFEID != "spiffe://example.org/ns/demo/sa/app" ||
		back.SVIDs[0].ExpiresIn != 30 || back.SVIDs[0].Past || !back.SVIDs[1].Past ||
		back.SVIDs[0].Chain[0].URIs[0] != back.SVIDs[0].SPIFFEID || back.Bundles[0].TrustDomain != "example.org" {
		t.Fatalf("JSON %s", js.String())
	}
}

func TestRelTime(t *testing.T) {
	now := time.Now()
	for d, want := range map[time.Duration]string{
		29*time.Second + 400*time.Millisecond: "in 29s",
		-3 * time.Second:                      "3s ago",
		time.Hour + time.Minute:               "in 1h1m0s",
		100 * time.Millisecond:                "now",
	} {
		if got := relTime(now.Add(d), now); got != want {
			t.Errorf("relTime(%v) = %q, want %q", d, got, want)
		}
	}
}
