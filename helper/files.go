package helper

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/internal/atomicfile"
)

// Files says where an SVID goes on disk: the helper's files, and those of
// `svid fetch -write`.
type Files struct {
	Dir string
	// Names in Dir; empty ones take the defaults below.
	Cert, Key, Bundle, JWT string
	// Federated also puts federated trust domains' roots in Bundle.
	Federated bool
}

// The default file names.
const (
	DefaultCertFile   = "svid.pem"
	DefaultKeyFile    = "svid_key.pem"
	DefaultBundleFile = "bundle.pem"
	DefaultJWTFile    = "jwt_svid.token"
)

// Modes: the key and the JWT-SVID are secrets; certificates are not.
const (
	certMode   os.FileMode = 0o644
	secretMode os.FileMode = 0o600
)

func (f Files) withDefaults() Files {
	for _, n := range []struct {
		name *string
		def  string
	}{
		{&f.Cert, DefaultCertFile}, {&f.Key, DefaultKeyFile}, {&f.Bundle, DefaultBundleFile}, {&f.JWT, DefaultJWTFile},
	} {
		if *n.name == "" {
			*n.name = n.def
		}
	}
	return f
}

// svidFiles is what Files would hold for one SVID.
type svidFiles struct {
	cert, key, bundle []byte
}

func (a svidFiles) equal(b svidFiles) bool {
	return bytes.Equal(a.cert, b.cert) && bytes.Equal(a.key, b.key) && bytes.Equal(a.bundle, b.bundle)
}

// render encodes the SVID's chain (leaf first), its key (PKCS#8) and its
// trust domain's roots, then, with Federated, every other trust domain's.
func (f Files) render(s *x509svid.SVID, set *x509bundle.Set) (svidFiles, error) {
	cert, key, err := s.Marshal()
	if err != nil {
		return svidFiles{}, fmt.Errorf("encode SVID %s: %w", s.ID, err)
	}
	own, ok := set.Get(s.ID.TrustDomain())
	if !ok {
		return svidFiles{}, fmt.Errorf("meshid sent no bundle for %s, the trust domain of %s", s.ID.TrustDomain(), s.ID)
	}
	var roots []byte
	add := func(b *x509bundle.Bundle) {
		for _, c := range b.X509Authorities() {
			roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
	}
	add(own)
	if f.Federated {
		for _, b := range set.Bundles() {
			if b.TrustDomain() != own.TrustDomain() {
				add(b)
			}
		}
	}
	return svidFiles{cert: cert, key: key, bundle: roots}, nil
}

// Write puts the SVID's chain (0644), key (0600) and trust bundle (0644)
// in Dir, each atomically, and returns the paths written. The three are
// renamed into place one after the other: the signal to reload comes
// after all three.
func (f Files) Write(s *x509svid.SVID, bundles *x509bundle.Set) ([]string, error) {
	f = f.withDefaults()
	out, err := f.render(s, bundles)
	if err != nil {
		return nil, err
	}
	return f.write(out)
}

func (f Files) write(out svidFiles) ([]string, error) {
	var written []string
	for _, file := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{f.Cert, out.cert, certMode},
		{f.Key, out.key, secretMode},
		{f.Bundle, out.bundle, certMode},
	} {
		path := filepath.Join(f.Dir, file.name)
		if err := atomicfile.Write(path, file.data, file.mode); err != nil {
			return written, err
		}
		written = append(written, path)
	}
	return written, nil
}

// WriteJWT puts the JWT-SVID's token, without a newline, in Dir (0600) and
// returns its path.
func (f Files) WriteJWT(s *jwtsvid.SVID) (string, error) {
	path := filepath.Join(f.Dir, f.withDefaults().JWT)
	return path, atomicfile.Write(path, []byte(s.Marshal()), secretMode)
}
