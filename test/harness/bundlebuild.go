package harness

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BundleBuild is what BuildBundle asks `meshid policy build` for; the
// zero value is an unsigned bundle with meshid's default revision and
// roots.
type BundleBuild struct {
	Revision string
	Roots    []string
	// SigningKey signs the bundle with this PEM private key file (see
	// SigningKeyPair); KeyID, Scope and SigningAlg go with it.
	SigningKey string
	KeyID      string
	Scope      string
	SigningAlg string
	// RegoVersion is "v1" (empty) or "v0".
	RegoVersion string
}

// BuildBundle runs the real `meshid policy build` from BinDir on
// policyDir and returns the bundle it wrote. A refused build is an error
// holding what the command said.
func (e *Env) BuildBundle(ctx context.Context, policyDir string, b BundleBuild) ([]byte, error) {
	bin, err := e.Binary("meshid")
	if err != nil {
		return nil, err
	}
	dir, err := e.MkdirAll("bundle-builds")
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "bundle-*.tar.gz")
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	out := f.Name()
	f.Close()
	args := []string{"policy", "build", policyDir, "-o", out}
	for _, flag := range []struct{ name, value string }{
		{"revision", b.Revision}, {"signing-key", b.SigningKey}, {"key-id", b.KeyID},
		{"scope", b.Scope}, {"signing-alg", b.SigningAlg}, {"rego-version", b.RegoVersion},
	} {
		if flag.value != "" {
			args = append(args, "--"+flag.name, flag.value)
		}
	}
	for _, r := range b.Roots {
		args = append(args, "--root", r)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	said, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("harness: meshid %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(said)))
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	e.logf("harness: built bundle %s of %s (%d bytes): %s", out, policyDir, len(data), strings.TrimSpace(string(said)))
	return data, nil
}

// SigningKeyPair makes an RSA 2048 key pair for signing bundles, PEM
// files of mode 0600 in Env.Dir/keys: NAME.key (PKCS #1) for
// BundleBuild.SigningKey and NAME.pub (PKIX) for a verifier, e.g.
// meshid's authz.bundles signing key. It returns their paths.
func (e *Env) SigningKeyPair(name string) (privateFile, publicFile string, err error) {
	dir, err := e.MkdirAll("keys")
	if err != nil {
		return "", "", err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", fmt.Errorf("harness: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", fmt.Errorf("harness: %w", err)
	}
	privateFile, publicFile = filepath.Join(dir, name+".key"), filepath.Join(dir, name+".pub")
	for _, f := range []struct {
		path string
		b    *pem.Block
	}{
		{privateFile, &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}},
		{publicFile, &pem.Block{Type: "PUBLIC KEY", Bytes: pub}},
	} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(f.b), 0o600); err != nil {
			return "", "", fmt.Errorf("harness: %w", err)
		}
	}
	return privateFile, publicFile, nil
}
