package helper

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestFilesWrite(t *testing.T) {
	ca := newTestCA(t, "example.org")
	other := newTestCA(t, "other.org")
	set := x509bundle.NewSet(
		x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.root}),
		x509bundle.FromX509Authorities(other.td, []*x509.Certificate{other.root}),
	)
	tests := []struct {
		name      string
		files     Files
		wantRoots int
	}{
		{"defaults, own roots", Files{}, 1},
		{"federated roots too", Files{Federated: true}, 2},
		{"named files", Files{Cert: "tls.crt", Key: "tls.key", Bundle: "ca.crt"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := tt.files
			f.Dir = t.TempDir()
			names := f.withDefaults()
			// An earlier run's files are replaced whole, with the right
			// modes even where the old file's was wrong.
			for _, n := range []string{names.Cert, names.Key, names.Bundle} {
				if err := os.WriteFile(filepath.Join(f.Dir, n), []byte("old"), 0o666); err != nil {
					t.Fatal(err)
				}
			}
			s := ca.fresh(t)
			paths, err := f.Write(s, set)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{filepath.Join(f.Dir, names.Cert), filepath.Join(f.Dir, names.Key), filepath.Join(f.Dir, names.Bundle)}
			if strings.Join(paths, " ") != strings.Join(want, " ") {
				t.Fatalf("wrote %v, want %v", paths, want)
			}
			got, err := x509svid.Load(want[0], want[1])
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != s.ID || !got.Certificates[0].Equal(s.Certificates[0]) {
				t.Fatalf("%s holds %s", names.Cert, got.ID)
			}
			for path, mode := range map[string]os.FileMode{want[0]: 0o644, want[1]: 0o600, want[2]: 0o644} {
				if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != mode {
					t.Errorf("%s: mode %v, %v; want %v", path, fi.Mode().Perm(), err, mode)
				}
			}
			roots, err := x509bundle.Load(ca.td, want[2])
			if err != nil {
				t.Fatal(err)
			}
			if n := len(roots.X509Authorities()); n != tt.wantRoots || !roots.X509Authorities()[0].Equal(ca.root) {
				t.Fatalf("bundle holds %d roots, own first: %v; want %d", n, roots.X509Authorities()[0].Equal(ca.root), tt.wantRoots)
			}
			entries, _ := os.ReadDir(f.Dir)
			if len(entries) != 3 {
				t.Fatalf("%s holds %d names, want the 3 files", f.Dir, len(entries))
			}
		})
	}
}

func TestFilesWriteFailures(t *testing.T) {
	ca := newTestCA(t, "example.org")
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string) Files
		want    []string
		written int
	}{
		{"missing directory", func(t *testing.T, dir string) Files {
			return Files{Dir: filepath.Join(dir, "nope")}
		}, []string{"nope/svid.pem", "(directory " + "%DIR%/nope does not exist)"}, 0},
		{"key name taken by a directory", func(t *testing.T, dir string) Files {
			if err := os.Mkdir(filepath.Join(dir, "svid_key.pem"), 0o755); err != nil {
				t.Fatal(err)
			}
			return Files{Dir: dir}
		}, []string{"svid_key.pem: replace it"}, 1},
		{"unwritable directory", func(t *testing.T, dir string) Files {
			if os.Geteuid() == 0 {
				t.Skip("root writes anywhere; the e2e test covers this as a workload uid")
			}
			ro := filepath.Join(dir, "ro")
			if err := os.Mkdir(ro, 0o555); err != nil {
				t.Fatal(err)
			}
			return Files{Dir: ro}
		}, []string{"ro/svid.pem", "permission denied", "choose a directory it owns"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			f := tt.setup(t, dir)
			paths, err := f.Write(ca.fresh(t), ca.bundles())
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if w = strings.ReplaceAll(w, "%DIR%", dir); !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if len(paths) != tt.written {
				t.Errorf("reported %v written, want %d", paths, tt.written)
			}
			filepath.WalkDir(dir, func(p string, d os.DirEntry, _ error) error {
				if d != nil && strings.Contains(d.Name(), ".tmp-") {
					t.Errorf("left behind %s", p)
				}
				return nil
			})
		})
	}
}

func TestFilesNeedTheSVIDsBundle(t *testing.T) {
	ca := newTestCA(t, "example.org")
	other := newTestCA(t, "other.org")
	_, err := Files{Dir: t.TempDir()}.Write(ca.fresh(t), other.bundles())
	if err == nil || err.Error() != "meshid sent no bundle for example.org, the trust domain of spiffe://example.org/app" {
		t.Fatalf("err = %v", err)
	}
}

func TestFilesWriteJWT(t *testing.T) {
	dir := t.TempDir()
	s := testJWT(t, "spiffe://example.org/app", "payments", time.Minute)
	path, err := Files{Dir: dir, JWT: "token"}.WriteJWT(s)
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, "token") {
		t.Fatalf("path %s", path)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != s.Marshal() {
		t.Fatalf("token file holds %q, %v; want the token without a newline", b, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
}
