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
	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"

	"github.com/meshid/meshid/test/grpctest"
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

// oneSVIDAPI is a Workload API with one X509-SVID for every caller.
type oneSVIDAPI struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
	resp *workloadpb.X509SVIDResponse
}

func (a oneSVIDAPI) FetchX509SVID(_ *workloadpb.X509SVIDRequest, stream workloadpb.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	if err := stream.Send(a.resp); err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

// serveSVID serves s on a real socket and returns its path.
func serveSVID(t *testing.T, ca *testCA, s *x509svid.SVID) string {
	t.Helper()
	cert, key, err := s.MarshalRaw()
	if err != nil {
		t.Fatal(err)
	}
	api := oneSVIDAPI{resp: &workloadpb.X509SVIDResponse{Svids: []*workloadpb.X509SVID{{
		SpiffeId: s.ID.String(), X509Svid: cert, X509SvidKey: key, Bundle: ca.root.Raw,
	}}}}
	conn := grpctest.Serve(t, "unix", func(srv *grpc.Server) { workloadpb.RegisterSpiffeWorkloadAPIServer(srv, api) })
	return strings.TrimPrefix(conn.Target(), "unix://")
}

func TestSVIDFetchWrite(t *testing.T) {
	ca := newTestCA(t, "example.org")
	s := ca.svid(t, "/app", time.Now().Add(-10*time.Second), time.Now().Add(time.Hour))
	sock := serveSVID(t, ca, s)
	tests := []struct {
		name string
		args []string
		env  string
	}{
		{"-socket as a URI", []string{"-socket", "unix://" + sock}, ""},
		{"-socket as a path", []string{"-socket", sock}, ""},
		{"$SPIFFE_ENDPOINT_SOCKET as a path", nil, sock},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(workloadapi.SocketEnv, tt.env)
			dir := t.TempDir()
			out, _, err := runCmd(t, append([]string{"svid", "fetch", "-json", "-write", dir, "-key-file", "tls.key"}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			var r struct{ Written []string }
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatal(err)
			}
			want := []string{filepath.Join(dir, "svid.pem"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "bundle.pem")}
			if strings.Join(r.Written, " ") != strings.Join(want, " ") {
				t.Fatalf("written %v, want %v", r.Written, want)
			}
			got, err := x509svid.Load(want[0], want[1])
			if err != nil || !got.Certificates[0].Equal(s.Certificates[0]) {
				t.Fatalf("files hold another SVID: %v", err)
			}
			for path, mode := range map[string]os.FileMode{want[0]: 0o644, want[1]: 0o600, want[2]: 0o644} {
				if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
					t.Errorf("%s: %v, want mode %v", path, err, mode)
				}
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 3 {
				t.Fatalf("%s holds %d names, want the 3 files", dir, len(entries))
			}
		})
	}
}

// TestClientCommandsNameTheSocketSource: every Workload API client command
// takes its socket the same way, and says where a bad one came from.
func TestClientCommandsNameTheSocketSource(t *testing.T) {
	const badFlag = "tcp://127.0.0.1:8081"
	commands := [][]string{
		{"svid", "fetch", "ARGS"},
		{"svid", "watch", "-write", t.TempDir(), "ARGS"},
		{"jwt", "fetch", "-audience", "a", "ARGS"},
		{"jwt", "validate", "-audience", "a", "ARGS", "token"},
		{"bundle", "show", "ARGS"},
		{"healthcheck", "ARGS"},
	}
	with := func(cmd []string, extra ...string) []string {
		var out []string
		for _, a := range cmd {
			if a == "ARGS" {
				out = append(out, extra...)
			} else {
				out = append(out, a)
			}
		}
		return out
	}
	for _, cmd := range commands {
		t.Run(strings.TrimSuffix(cmd[0]+" "+cmd[1], " ARGS"), func(t *testing.T) {
			t.Setenv(workloadapi.SocketEnv, "agent.sock")
			_, _, err := runCmd(t, with(cmd)...)
			if want := `$SPIFFE_ENDPOINT_SOCKET "agent.sock": a relative path (want /path/to/agent.sock or unix:///path/to/agent.sock)`; err == nil || err.Error() != want {
				t.Errorf("from the environment: %v, want %q", err, want)
			}
			_, _, err = runCmd(t, with(cmd, "-socket", badFlag)...)
			if want := `-socket "` + badFlag + `": scheme "tcp": meshid serves the Workload API on a Unix socket only`; err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("from the flag: %v, want %q", err, want)
			}
		})
	}
}
