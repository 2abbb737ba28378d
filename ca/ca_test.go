package ca

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: time.Now().Truncate(time.Second)} }

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) Set(t time.Time) {
	f.mu.Lock()
	f.now = t
	f.mu.Unlock()
}

func open(t *testing.T, dir string, clk *fakeClock) *Authority {
	t.Helper()
	a, err := Open(Options{TrustDomain: td, Dir: dir, TTL: 24 * time.Hour, Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mint(t *testing.T, a *Authority, id string) *x509svid.SVID {
	t.Helper()
	svid, err := a.MintX509SVID(SVIDRequest{ID: spiffeid.RequireFromString(id), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return svid
}

func TestOpenCreatesTheFirstGenerationWithTightPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	a := open(t, dir, newClock())
	gen := filepath.Join(dir, "ca", "000001")
	for path, want := range map[string]os.FileMode{
		dir:                            0o700,
		filepath.Join(dir, "ca"):       0o700,
		gen:                            0o700,
		filepath.Join(gen, keyFile):    0o600,
		filepath.Join(gen, jwtKeyFile): 0o600,
		filepath.Join(gen, certFile):   0o644,
	} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s has mode %04o, want %04o", path, got, want)
		}
	}
	if n := len(a.X509Bundle().X509Authorities()); n != 1 {
		t.Errorf("bundle has %d roots, want 1", n)
	}
	if n := len(a.JWTBundle().JWTAuthorities()); n != 1 {
		t.Errorf("JWT bundle has %d keys, want 1", n)
	}
	if cert := a.Certificate(); cert.URIs[0].String() != "spiffe://example.org" || !cert.IsCA {
		t.Errorf("CA certificate: uris=%v isCA=%v", cert.URIs, cert.IsCA)
	}
}

func TestRestartReusesTheTrustRoot(t *testing.T) {
	dir, clk := t.TempDir(), newClock()
	first := open(t, dir, clk)
	clk.Set(clk.Now().Add(time.Hour))
	second := open(t, dir, clk)
	if !first.X509Bundle().Equal(second.X509Bundle()) || !first.JWTBundle().Equal(second.JWTBundle()) {
		t.Fatal("a restart changed the bundles instead of reusing the persisted CA")
	}
}

// TestTimeline walks one CA through prepare, activate and retire, with a
// restart in the middle, and checks who signs and what is trusted.
func TestTimeline(t *testing.T) {
	dir, clk := t.TempDir(), newClock()
	t0 := clk.Now()
	a := open(t, dir, clk)
	gen1 := a.Certificate()
	at := func(d time.Duration) { clk.Set(t0.Add(d)) }
	rotate := func(wantChanged bool) {
		t.Helper()
		changed, err := a.Rotate()
		if err != nil || changed != wantChanged {
			t.Fatalf("at %s: Rotate() = %v, %v; want changed=%v", clk.Now().Sub(t0), changed, err, wantChanged)
		}
	}
	roots := func() []*x509.Certificate { return a.X509Bundle().X509Authorities() }

	at(11*time.Hour + 59*time.Minute)
	rotate(false)
	if len(roots()) != 1 {
		t.Fatalf("next CA published before half-life")
	}

	at(12 * time.Hour) // half-life: the next CA is prepared and published
	rotate(true)
	if len(roots()) != 2 || len(a.JWTBundle().JWTAuthorities()) != 2 {
		t.Fatalf("at half-life the bundles hold %d roots and %d JWT keys, want 2 and 2", len(roots()), len(a.JWTBundle().JWTAuthorities()))
	}
	gen2 := roots()[1]
	if !a.Certificate().Equal(gen1) {
		t.Fatal("the prepared CA signs before the old one reaches 5/6 of its life")
	}
	rotate(false) // nothing more to do until the next milestone

	at(13 * time.Hour) // a restart in between resumes the same timeline
	a = open(t, dir, clk)
	if len(roots()) != 2 || !a.Certificate().Equal(gen1) {
		t.Fatal("restart between prepare and activate lost the timeline")
	}

	at(20*time.Hour - 10*time.Second) // lifetimes start 10s early (backdate)
	svid := mint(t, a, "spiffe://example.org/w")
	if err := svid.Certificates[0].CheckSignatureFrom(gen1); err != nil {
		t.Fatal("before 5/6 of its life, the old CA must still sign")
	}
	at(20 * time.Hour) // 5/6: the new CA signs
	svid = mint(t, a, "spiffe://example.org/w")
	if err := svid.Certificates[0].CheckSignatureFrom(gen2); err != nil {
		t.Fatalf("at 5/6 of the old CA's life the new one must sign: %v", err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, a.X509Bundle(), x509svid.WithTime(clk.Now())); err != nil {
		t.Fatalf("new SVID does not verify against the published bundle: %v", err)
	}

	at(24 * time.Hour) // the old CA expires: it leaves the bundle, the next one is prepared
	rotate(true)
	for _, r := range roots() {
		if r.Equal(gen1) {
			t.Fatal("an expired root is still in the bundle")
		}
	}
	if len(roots()) != 2 || !roots()[0].Equal(gen2) {
		t.Fatalf("after the old CA expired the bundle holds %d roots, want gen2 and its successor", len(roots()))
	}
	if _, err := os.Stat(filepath.Join(dir, "ca", "000001")); !os.IsNotExist(err) {
		t.Errorf("the expired generation is still on disk: %v", err)
	}
}

func TestSVIDLifetimeIsCappedAtTheSigner(t *testing.T) {
	clk := newClock()
	a := open(t, t.TempDir(), clk)
	clk.Set(a.Certificate().NotAfter.Add(-30 * time.Minute))
	svid := mint(t, a, "spiffe://example.org/a")
	if got, want := svid.Certificates[0].NotAfter, a.Certificate().NotAfter; !got.Equal(want) {
		t.Errorf("NotAfter = %v, want capped at the CA's %v", got, want)
	}
}

func TestDowntimeLongerThanTheCAStartsOver(t *testing.T) {
	dir, clk := t.TempDir(), newClock()
	var logs bytes.Buffer
	old := open(t, dir, clk)
	clk.Set(clk.Now().Add(100 * time.Hour))
	a, err := Open(Options{TrustDomain: td, Dir: dir, TTL: 24 * time.Hour, Clock: clk.Now, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if a.Certificate().Equal(old.Certificate()) || len(a.X509Bundle().X509Authorities()) != 1 {
		t.Fatal("expired generations were kept")
	}
	if !strings.Contains(logs.String(), "CA generation expired") {
		t.Errorf("replacing the trust root must be logged:\n%s", logs.String())
	}
}

func TestMintX509SVID(t *testing.T) {
	clk := newClock()
	a := open(t, t.TempDir(), clk)
	id := spiffeid.RequireFromString("spiffe://example.org/ns/demo/sa/frontend")
	svid, err := a.MintX509SVID(SVIDRequest{ID: id, TTL: time.Hour, DNSNames: []string{"frontend.demo"}})
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	if !leaf.NotAfter.Equal(clk.Now().Add(time.Hour)) || !leaf.NotBefore.Equal(clk.Now().Add(-backdate)) {
		t.Errorf("validity %v..%v", leaf.NotBefore, leaf.NotAfter)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("EKU = %v, want serverAuth+clientAuth", leaf.ExtKeyUsage)
	}
	if leaf.IsCA || leaf.DNSNames[0] != "frontend.demo" || len(svid.Certificates) != 1 {
		t.Errorf("leaf isCA=%v dns=%v chain=%d", leaf.IsCA, leaf.DNSNames, len(svid.Certificates))
	}
	gotID, _, err := x509svid.Verify(svid.Certificates, a.X509Bundle(), x509svid.WithTime(clk.Now()))
	if err != nil || gotID != id {
		t.Fatalf("Verify = %v, %v; want %v", gotID, err, id)
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509svid.Parse(certPEM, keyPEM); err != nil {
		t.Fatalf("go-spiffe rejects our SVID: %v", err)
	}
	if _, err := a.MintX509SVID(SVIDRequest{ID: spiffeid.RequireFromString("spiffe://other.org/a"), TTL: time.Hour}); err == nil {
		t.Error("minted an SVID outside the trust domain")
	}
}

// TestOpenRefusesWhatItCannotTrust damages a persisted CA in every way the
// disk can and expects a refusal that says what to do, with nothing replaced.
func TestOpenRefusesWhatItCannotTrust(t *testing.T) {
	gen := func(dir string) string { return filepath.Join(dir, "ca", "000001") }
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		td     string
		want   string // DIR stands for the data_dir
	}{
		{"group-readable key", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(gen(dir), keyFile), 0o640)
		}, "", "chmod 600"},
		{"truncated certificate", func(t *testing.T, dir string) {
			data, _ := os.ReadFile(filepath.Join(gen(dir), certFile))
			os.WriteFile(filepath.Join(gen(dir), certFile), data[:len(data)/2], 0o644)
		}, "", "ca.crt: no PEM CERTIFICATE block"},
		{"corrupt key", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(gen(dir), keyFile), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
		}, "", "ca.key: parse PEM \"PRIVATE KEY\" block"},
		{"key of another CA", func(t *testing.T, dir string) {
			other := t.TempDir()
			open(t, other, newClock())
			data, _ := os.ReadFile(filepath.Join(gen(other), keyFile))
			os.WriteFile(filepath.Join(gen(dir), keyFile), data, 0o600)
		}, "", "private key does not match the certificate"},
		{"missing JWT key", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(gen(dir), jwtKeyFile))
		}, "", "jwt.key"},
		{"other trust domain", func(*testing.T, string) {}, "other.org", `belongs to trust domain "example.org", not "other.org"`},
		{"stray file", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, "ca", "notes.txt"), nil, 0o600)
		}, "", "not a CA generation"},
		{"data_dir of another uid", func(t *testing.T, dir string) {
			if err := os.Chown(dir, 12345, -1); err != nil {
				t.Skipf("chown needs root: %v", err)
			}
		}, "", "DIR is owned by uid 12345, not by meshid's uid"},
		{"group-writable data_dir", func(t *testing.T, dir string) {
			os.Chmod(dir, 0o770)
		}, "", "DIR has mode 0770: group or others may write to it; run: chmod 700 DIR"},
		{"world-writable ca dir", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, "ca"), 0o777)
		}, "", "DIR/ca has mode 0777: group or others may write to it; run: chmod 700 DIR/ca"},
		{"generation from the future", func(t *testing.T, dir string) {
			os.RemoveAll(filepath.Join(dir, "ca"))
			open(t, dir, &fakeClock{now: time.Now().Add(time.Hour)})
		}, "", "DIR/ca/000001: ca.crt is not valid before"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, clk := t.TempDir(), newClock()
			open(t, dir, clk)
			tt.damage(t, dir)
			before := snapshot(t, dir)
			domain := td
			if tt.td != "" {
				domain = spiffeid.RequireTrustDomainFromString(tt.td)
			}
			_, err := Open(Options{TrustDomain: domain, Dir: dir, TTL: 24 * time.Hour, Clock: clk.Now})
			want := strings.ReplaceAll(tt.want, "DIR", dir)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Open error = %v, want it to contain %q", err, want)
			}
			if after := snapshot(t, dir); after != before {
				t.Fatal("a refused start changed the CA material on disk")
			}
		})
	}
}

// TestOpenAllowsClockSkewOnly accepts a generation that starts a little
// ahead (clocks differ by seconds, and meshid backdates by as much) and
// refuses one that starts beyond that.
func TestOpenAllowsClockSkewOnly(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	for _, tt := range []struct {
		ahead time.Duration // how far ahead of now the generation was made
		ok    bool
	}{
		{backdate, true},     // starts now
		{2 * backdate, true}, // starts within the allowance
		{2*backdate + time.Second, false},
	} {
		dir := t.TempDir()
		open(t, dir, &fakeClock{now: now.Add(tt.ahead)})
		_, err := Open(Options{TrustDomain: td, Dir: dir, TTL: 24 * time.Hour, Clock: func() time.Time { return now }})
		if (err == nil) != tt.ok {
			t.Errorf("generation made %s ahead: Open = %v, want ok=%v", tt.ahead, err, tt.ok)
		}
	}
}

func TestInterruptedWriteIsDiscarded(t *testing.T) {
	dir, clk := t.TempDir(), newClock()
	a := open(t, dir, clk)
	leftover := filepath.Join(dir, "ca", tmpPrefix+"123")
	os.Mkdir(leftover, 0o700)
	b := open(t, dir, clk)
	if !a.X509Bundle().Equal(b.X509Bundle()) {
		t.Fatal("a leftover temporary directory changed the trust root")
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Error("leftover temporary directory not removed")
	}
}

// snapshot lists every file under dir with its content, to detect changes.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			data, _ := os.ReadFile(path)
			info, _ := d.Info()
			b.WriteString(path + " " + info.Mode().String() + " " + string(data) + "\n")
		}
		return nil
	})
	return b.String()
}
