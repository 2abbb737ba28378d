package vault_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/ca/vault"
	"github.com/meshid/meshid/test/harness"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

// clock is a settable clock starting at the real time: the engine stamps
// its certificates with the real time, meshid's timeline runs on this.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// node is one meshid CA under an engine.
type node struct {
	a    *ca.Authority
	dir  string
	clk  *clock
	reg  *prometheus.Registry
	logs *logLines
}

// logLines keeps what the CA logged, as "LEVEL message".
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logLines) WithGroup(string) slog.Handler            { return l }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, r.Level.String()+" "+r.Message)
	return nil
}

// count returns how many lines were logged at level with message.
func (l *logLines) count(level slog.Level, message string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if line == level.String()+" "+message {
			n++
		}
	}
	return n
}

func tokenClient(t *testing.T, b *harness.OpenBao) *vault.Client {
	t.Helper()
	tokenFile, err := b.Token(t.Context(), "meshid", harness.MeshidPolicy(b.Mount), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := vault.New(vault.Options{Address: b.Address, PKIMount: b.Mount, CAFile: b.CAFile, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func openNode(t *testing.T, ua ca.UpstreamAuthority, dir string, clk *clock) (*node, error) {
	t.Helper()
	n := &node{dir: dir, clk: clk, reg: prometheus.NewRegistry(), logs: &logLines{}}
	var err error
	n.a, err = ca.Open(ca.Options{TrustDomain: td, Dir: dir, TTL: time.Hour, UpstreamAuthority: ua,
		RootsRefresh: time.Minute, Clock: clk.Now, Log: slog.New(n.logs), Metrics: n.reg})
	return n, err
}

func mustOpen(t *testing.T, ua ca.UpstreamAuthority, dir string, clk *clock) *node {
	t.Helper()
	n, err := openNode(t, ua, dir, clk)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *node) mint(t *testing.T) *x509svid.SVID {
	t.Helper()
	s, err := n.a.MintX509SVID(ca.SVIDRequest{ID: spiffeid.RequireFromPath(td, "/w"), TTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// verifies checks that svid chains to roots at the node's time, and
// returns the intermediate it chains through.
func (n *node) verifies(t *testing.T, svid *x509svid.SVID, roots []*x509.Certificate) *x509.Certificate {
	t.Helper()
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range svid.Certificates[1:] {
		inter.AddCert(c)
	}
	if _, err := svid.Certificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: n.clk.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("SVID does not chain to the engine's roots: %v", err)
	}
	return svid.Certificates[1]
}

func engineRoots(t *testing.T, b *harness.OpenBao) []*x509.Certificate {
	t.Helper()
	roots, err := b.Roots(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return roots
}

func sameSet(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		found := false
		for _, y := range b {
			found = found || x.Equal(y)
		}
		if !found {
			return false
		}
	}
	return true
}

// TestSignIntermediate: meshid's key, the engine's signature, the
// engine's root as the bundle; a restart reuses what is on disk.
func TestSignIntermediate(t *testing.T) {
	b := harness.OpenBaoForTest(t, harness.OpenBaoOptions{TLS: true})
	clk := newClock()
	dir := t.TempDir()
	c := tokenClient(t, b)
	n := mustOpen(t, c, dir, clk)

	roots := engineRoots(t, b)
	if got := n.a.X509Bundle().X509Authorities(); !sameSet(got, roots) {
		t.Fatalf("bundle has %d roots, not the engine's %d", len(got), len(roots))
	}
	svid := n.mint(t)
	inter := n.verifies(t, svid, roots)
	if !inter.IsCA || inter.Subject.CommonName != "example.org intermediate CA" || len(inter.URIs) != 1 || inter.URIs[0].String() != "spiffe://example.org" {
		t.Fatalf("intermediate: CA %v, subject %q, URIs %v", inter.IsCA, inter.Subject, inter.URIs)
	}
	if !inter.MaxPathLenZero {
		t.Error("the intermediate may sign further CAs: want max_path_length 0")
	}
	if life := inter.NotAfter.Sub(inter.NotBefore); life < 59*time.Minute || life > 62*time.Minute {
		t.Errorf("intermediate lives %s, want ca.ttl 1h", life)
	}
	if _, err := os.Stat(filepath.Join(dir, "upstream-authority", "roots.crt")); err != nil {
		t.Fatalf("roots not kept for a restart: %v", err)
	}
	// meshid policy eval reads the JWT keys of this kind of CA from disk.
	if jwt, err := ca.ReadJWTBundle(dir, td, ca.RootUpstreamAuthority); err != nil || !jwt.Equal(n.a.JWTBundle()) {
		t.Fatalf("ReadJWTBundle = %v, %v; want the CA's JWT keys", jwt, err)
	}

	// A restart with the engine down signs with the intermediate on disk.
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	again := mustOpen(t, c, dir, clk)
	if !again.a.Certificate().Equal(inter) {
		t.Fatal("a restart asked for a new intermediate instead of using the one on disk")
	}
	again.verifies(t, again.mint(t), roots)
}

// TestRenewalRidesOutAnOutage: the engine is down when renewal is due;
// the node keeps signing, backs off, says so, and renews once the engine
// is back.
func TestRenewalRidesOutAnOutage(t *testing.T) {
	b := harness.OpenBaoForTest(t, harness.OpenBaoOptions{})
	clk := newClock()
	n := mustOpen(t, tokenClient(t, b), t.TempDir(), clk)
	first := n.a.Certificate()
	failures := func() float64 {
		mfs, err := n.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "meshid_ca_upstream_failures_total" {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		t.Fatal("no meshid_ca_upstream_failures_total")
		return 0
	}

	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	clk.Add(34 * time.Minute) // past 55 % of the hour: renewal is due
	if _, err := n.a.Rotate(); err == nil || !strings.Contains(err.Error(), "engine unreachable") {
		t.Fatalf("Rotate with the engine down = %v, want it unreachable", err)
	}
	if f := failures(); f < 1 {
		t.Fatalf("upstream failures = %v", f)
	}
	if err := n.a.Health(); err != nil {
		t.Fatalf("an outage before the successor is due made the CA unhealthy: %v", err)
	}
	n.verifies(t, n.mint(t), engineRoots2(t, n))

	// Within the backoff, no new attempt: the counter stays.
	before := failures()
	clk.Add(500 * time.Millisecond) // the first backoff waits 1-2 s
	if _, err := n.a.Rotate(); err == nil {
		t.Fatal("the failure vanished during the backoff")
	}
	if f := failures(); f != before {
		t.Fatalf("the engine was asked again within the backoff: failures %v -> %v", before, f)
	}

	// Past 5/6 of the intermediate's life the outage is a health problem.
	clk.Add(17 * time.Minute)
	n.a.Rotate()
	if err := n.a.Health(); err == nil || !strings.Contains(err.Error(), "rotation failing since") {
		t.Fatalf("Health near the intermediate's end = %v", err)
	}
	if !n.a.Certificate().Equal(first) {
		t.Fatal("the CA stopped signing with its only valid intermediate")
	}

	// Said once when it started, not at every attempt.
	if got := n.logs.count(slog.LevelError, "CA rotation failed; the CA keeps signing with what is still valid"); got != 1 {
		t.Errorf("the outage was logged %d times at ERROR, want once", got)
	}

	if err := b.Restart(t.Context()); err != nil {
		t.Fatal(err)
	}
	clk.Add(6 * time.Minute) // past any backoff
	if _, err := n.a.Rotate(); err != nil {
		t.Fatalf("Rotate after the engine came back: %v", err)
	}
	if err := n.a.Health(); err != nil {
		t.Fatalf("Health after recovery: %v", err)
	}
	if got := n.logs.count(slog.LevelInfo, "CA rotation recovered"); got != 1 {
		t.Errorf("the recovery was logged %d times, want once", got)
	}
	if n.a.Certificate().Equal(first) {
		t.Fatal("no new intermediate signs past 5/6 of the old one's life")
	}
	n.verifies(t, n.mint(t), engineRoots(t, b))
}

func engineRoots2(t *testing.T, n *node) []*x509.Certificate {
	t.Helper()
	return n.a.X509Bundle().X509Authorities()
}

// TestRootRotation: a new issuer in the engine reaches the bundle beside
// the old root; the next intermediate chains to the new root; once the
// old issuer is deleted, the node renews at once and signs only with an
// intermediate under the new root.
func TestRootRotation(t *testing.T) {
	b := harness.OpenBaoForTest(t, harness.OpenBaoOptions{})
	clk := newClock()
	n := mustOpen(t, tokenClient(t, b), t.TempDir(), clk)
	oldRoots := engineRoots(t, b)
	oldID := issuerIDs(t, b)[0]
	oldSVID := n.mint(t)

	if _, err := b.RotateRoot(t.Context(), "root 2"); err != nil {
		t.Fatal(err)
	}
	clk.Add(61 * time.Second) // one refresh interval
	changed, err := n.a.Rotate()
	if err != nil || !changed {
		t.Fatalf("Rotate after a root rotation = %v, %v; want the bundle changed", changed, err)
	}
	both := n.a.X509Bundle().X509Authorities()
	if len(both) != 2 || !sameSet(both, engineRoots(t, b)) {
		t.Fatalf("bundle during the overlap has %d roots, want the old and the new", len(both))
	}
	n.verifies(t, oldSVID, both)

	if err := b.DeleteIssuer(t.Context(), oldID); err != nil {
		t.Fatal(err)
	}
	clk.Add(61 * time.Second)
	if _, err := n.a.Rotate(); err != nil {
		t.Fatal(err)
	}
	newRoots := n.a.X509Bundle().X509Authorities()
	if len(newRoots) != 1 || newRoots[0].Equal(oldRoots[0]) {
		t.Fatal("the deleted root is still in the bundle")
	}
	svid := n.mint(t)
	n.verifies(t, svid, newRoots)
}

func issuerIDs(t *testing.T, b *harness.OpenBao) []string {
	t.Helper()
	var list struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	if err := b.Call(t.Context(), "LIST", b.Mount+"/issuers", nil, &list); err != nil {
		t.Fatal(err)
	}
	return list.Data.Keys
}

// TestVaultTokenVariable: with no way to log in configured, $VAULT_TOKEN
// is the token; with neither, New says what to set.
func TestVaultTokenVariable(t *testing.T) {
	b := harness.OpenBaoForTest(t, harness.OpenBaoOptions{})
	tokenFile, err := b.Token(t.Context(), "meshid", harness.MeshidPolicy(b.Mount), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("VAULT_TOKEN", "")
	if _, err := vault.New(vault.Options{Address: b.Address}); err == nil || !strings.Contains(err.Error(), "set token_file, approle or kubernetes, or $VAULT_TOKEN") {
		t.Fatalf("New without a token: %v", err)
	}
	t.Setenv("VAULT_TOKEN", strings.TrimSpace(string(token)))
	c, err := vault.New(vault.Options{Address: b.Address})
	if err != nil {
		t.Fatal(err)
	}
	n := mustOpen(t, c, t.TempDir(), newClock())
	n.verifies(t, n.mint(t), engineRoots(t, b))
}

// TestAppRole logs in with a role ID and secret ID, and again when the
// token it was given expires.
func TestAppRole(t *testing.T) {
	b := harness.OpenBaoForTest(t, harness.OpenBaoOptions{})
	roleID, secretID, err := b.AppRole(t.Context(), "meshid", harness.MeshidPolicy(b.Mount), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := vault.New(vault.Options{Address: b.Address, PKIMount: b.Mount,
		AppRole: &vault.AppRole{RoleIDFile: roleID, SecretIDFile: secretID}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Roots(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The token has expired for the engine: the client logs in again,
	// either because it knows the lease ran out or on the engine's 403.
	time.Sleep(2500 * time.Millisecond)
	n := mustOpen(t, c, t.TempDir(), newClock())
	n.verifies(t, n.mint(t), engineRoots(t, b))
}

// TestBadEngine: each way an engine can be wrong refuses the start with
// an error that says what and where.
func TestBadEngine(t *testing.T) {
	b := harness.OpenBaoForTest(t, harness.OpenBaoOptions{TLS: true})
	ctx := t.Context()
	if err := b.Call(ctx, "POST", "sys/mounts/kv", map[string]any{"type": "kv"}, nil); err != nil {
		t.Fatal(err)
	}
	good, err := b.Token(ctx, "meshid", harness.MeshidPolicy(b.Mount), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kvToken, err := b.Token(ctx, "meshid-kv", harness.MeshidPolicy("kv"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	readOnly, err := b.Token(ctx, "readonly", `path "pki/issuers" { capabilities = ["list"] }
path "pki/issuer/+/json" { capabilities = ["read"] }`, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wrong := filepath.Join(t.TempDir(), "token")
	os.WriteFile(wrong, []byte("s.not-a-token\n"), 0o600)

	tests := []struct {
		name string
		o    vault.Options
		want []string
	}{
		{"wrong token", vault.Options{Address: b.Address, CAFile: b.CAFile, TokenFile: wrong},
			[]string{"PUT pki/root/sign-intermediate: permission denied", "check the token"}},
		{"token may not sign", vault.Options{Address: b.Address, CAFile: b.CAFile, TokenFile: readOnly},
			[]string{"PUT pki/root/sign-intermediate: permission denied"}},
		{"mount that is not PKI", vault.Options{Address: b.Address, CAFile: b.CAFile, PKIMount: "kv", TokenFile: kvToken},
			[]string{`is "kv" a PKI secrets engine`}},
		{"no such mount", vault.Options{Address: b.Address, CAFile: b.CAFile, PKIMount: "nope", TokenFile: good},
			[]string{"nope"}},
		{"engine's TLS not trusted", vault.Options{Address: b.Address, TokenFile: good},
			[]string{"engine unreachable", "certificate"}},
		{"engine unreachable", vault.Options{Address: "http://" + freeAddr(t), TokenFile: good},
			[]string{"engine unreachable", "connection refused"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := vault.New(tt.o)
			if err != nil {
				t.Fatal(err)
			}
			_, err = openNode(t, c, t.TempDir(), newClock())
			if err == nil {
				t.Fatal("Open succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %v\nwant it to contain %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), "ca.upstream.vault "+b.Address) && tt.name != "engine unreachable" {
				t.Errorf("err = %v\nwant it to name the engine", err)
			}
		})
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	e, err := harness.New(t.Context(), harness.Options{NoBinaries: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e.FreeAddr()
}

// lying is an upstream that returns what the real engine signed, but
// not what meshid asked for: wrong answers a compromised or misconfigured
// engine could give.
type lying struct {
	*vault.Client
	otherTD    bool                // sign a request for another trust domain instead
	otherRoots []*x509.Certificate // present these roots instead of the engine's
}

func (l *lying) SignIntermediate(ctx context.Context, csr []byte, ttl time.Duration) ([]*x509.Certificate, error) {
	if l.otherTD {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		u, _ := url.Parse("spiffe://other.org")
		var err error
		if csr, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "other"}, URIs: []*url.URL{u}}, key); err != nil {
			return nil, err
		}
	}
	return l.Client.SignIntermediate(ctx, csr, ttl)
}

func (l *lying) Roots(ctx context.Context) ([]*x509.Certificate, error) {
	if l.otherRoots != nil {
		return l.otherRoots, nil
	}
	return l.Client.Roots(ctx)
}

// TestBadAnswerKeepsLastGood: an intermediate for another trust domain,
// or one that does not chain to the roots, is refused with a precise
// error, and a node that has a good one keeps signing with it.
func TestBadAnswerKeepsLastGood(t *testing.T) {
	b := harness.OpenBaoForTest(t, harness.OpenBaoOptions{})
	otherRoot := selfSignedRoot(t)
	tests := []struct {
		name string
		lie  func(*lying)
		want string
	}{
		{"another trust domain", func(l *lying) { l.otherTD = true }, `returned an intermediate meshid refuses: for another trust domain: CA belongs to trust domain "other.org"`},
		{"chain that does not verify", func(l *lying) { l.otherRoots = []*x509.Certificate{otherRoot} }, "returned an intermediate meshid refuses: does not chain to the upstream's roots"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &lying{Client: tokenClient(t, b)}
			tt.lie(l)
			if _, err := openNode(t, l, t.TempDir(), newClock()); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("first start: err = %v\nwant %q", err, tt.want)
			}

			// A node with a good intermediate meets the lie at renewal.
			honest := &lying{Client: tokenClient(t, b)}
			clk := newClock()
			n := mustOpen(t, honest, t.TempDir(), clk)
			good, bundle := n.a.Certificate(), n.a.X509Bundle()
			tt.lie(honest)
			clk.Add(34 * time.Minute)
			if _, err := n.a.Rotate(); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("renewal: err = %v\nwant %q", err, tt.want)
			}
			if !n.a.Certificate().Equal(good) || !n.a.X509Bundle().Equal(bundle) {
				t.Fatal("a refused answer replaced the last good intermediate or bundle")
			}
			n.verifies(t, n.mint(t), bundle.X509Authorities())
		})
	}
}

func selfSignedRoot(t *testing.T) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the engine's"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

// TestNamespace: with namespace set, meshid's calls go to the mount of
// that engine namespace, whose root is not the root namespace's.
func TestNamespace(t *testing.T) {
	b := harness.OpenBaoForTest(t, harness.OpenBaoOptions{})
	ns, err := b.InNamespace(t.Context(), "team-a")
	if err != nil {
		t.Fatal(err)
	}
	tokenFile, err := ns.Token(t.Context(), "meshid", harness.MeshidPolicy(ns.Mount), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := vault.New(vault.Options{Address: b.Address, Namespace: "team-a", TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	n := mustOpen(t, c, t.TempDir(), newClock())
	nsRoots, rootRoots := engineRoots(t, ns), engineRoots(t, b)
	if len(nsRoots) != 1 || nsRoots[0].Subject.CommonName != "team-a root" || nsRoots[0].Equal(rootRoots[0]) {
		t.Fatalf("the namespace's root is %v", nsRoots[0].Subject)
	}
	if got := n.a.X509Bundle().X509Authorities(); !sameSet(got, nsRoots) {
		t.Fatal("the bundle is not the namespace's root")
	}
	n.verifies(t, n.mint(t), nsRoots)

	// Without the header the same token means nothing to the engine.
	plain, err := vault.New(vault.Options{Address: b.Address, TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openNode(t, plain, t.TempDir(), newClock()); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("the namespace's token outside its namespace: %v", err)
	}
}

// TestKubernetesLogin logs in with a service account token through the
// engine's Kubernetes auth method. The engine checks the token with the
// Kubernetes API's TokenReview; that API is a stand-in on loopback that
// vouches for one token, the engine and meshid's client are real.
func TestKubernetesLogin(t *testing.T) {
	b := harness.OpenBaoForTest(t, harness.OpenBaoOptions{})
	ctx := t.Context()
	jwt := fakeServiceAccountJWT(t)
	reviews := 0
	var mu sync.Mutex
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review struct {
			Spec struct {
				Token string `json:"token"`
			} `json:"spec"`
		}
		if r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" || json.NewDecoder(r.Body).Decode(&review) != nil {
			http.Error(w, "not a token review", http.StatusNotFound)
			return
		}
		mu.Lock()
		reviews++
		mu.Unlock()
		status := map[string]any{"authenticated": false}
		if review.Spec.Token == jwt {
			status = map[string]any{"authenticated": true, "user": map[string]any{
				"username": "system:serviceaccount:mesh:meshid", "uid": "5b1c-0001", "groups": []string{"system:serviceaccounts"}}}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "status": status})
	}))
	defer api.Close()

	apiCA := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}))
	for _, c := range []struct {
		path string
		body map[string]any
	}{
		{"sys/auth/kubernetes", map[string]any{"type": "kubernetes"}},
		{"auth/kubernetes/config", map[string]any{"kubernetes_host": api.URL, "kubernetes_ca_cert": apiCA,
			"token_reviewer_jwt": jwt, "disable_local_ca_jwt": true}},
		{"sys/policies/acl/meshid", map[string]any{"policy": harness.MeshidPolicy(b.Mount)}},
		{"auth/kubernetes/role/meshid", map[string]any{"bound_service_account_names": []string{"meshid"},
			"bound_service_account_namespaces": []string{"mesh"}, "token_policies": []string{"meshid"}, "token_ttl": "1h"}},
	} {
		if err := b.Call(ctx, "POST", c.path, c.body, nil); err != nil {
			t.Fatal(err)
		}
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte(jwt+"\n"), 0o600)

	c, err := vault.New(vault.Options{Address: b.Address, Kubernetes: &vault.Kubernetes{Role: "meshid", TokenFile: tokenFile}})
	if err != nil {
		t.Fatal(err)
	}
	n := mustOpen(t, c, t.TempDir(), newClock())
	n.verifies(t, n.mint(t), engineRoots(t, b))
	mu.Lock()
	if reviews == 0 {
		t.Error("the engine never asked the Kubernetes API about the token")
	}
	mu.Unlock()

	// A role the service account is not bound to is refused at login.
	wrong, err := vault.New(vault.Options{Address: b.Address, Kubernetes: &vault.Kubernetes{Role: "nobody", TokenFile: tokenFile}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openNode(t, wrong, t.TempDir(), newClock()); err == nil || !strings.Contains(err.Error(), "login at PUT auth/kubernetes/login") {
		t.Fatalf("login with an unknown role: %v", err)
	}
}

// fakeServiceAccountJWT is shaped like a Kubernetes service account token
// for mesh/meshid; its signature is the stand-in API's business.
func fakeServiceAccountJWT(t *testing.T) string {
	t.Helper()
	enc := func(v any) string {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(data)
	}
	return enc(map[string]any{"alg": "RS256", "typ": "JWT"}) + "." + enc(map[string]any{
		"iss": "kubernetes/serviceaccount", "sub": "system:serviceaccount:mesh:meshid",
		"kubernetes.io/serviceaccount/namespace": "mesh", "kubernetes.io/serviceaccount/service-account.name": "meshid",
		"kubernetes.io/serviceaccount/service-account.uid": "5b1c-0001",
	}) + "." + base64.RawURLEncoding.EncodeToString([]byte("signature"))
}
