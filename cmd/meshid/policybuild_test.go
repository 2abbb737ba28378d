package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/test/authztest"
)

// A policy dir with a package in a subdirectory and data documents at
// three depths, as bundles of real policy dirs have.
const (
	meshPolicy = "package mesh.routes\n\npublic contains p if some p in data.mesh.routes.paths\n"
	routesData = `{"paths": ["/hello", "/healthz"]}`
	teamsYAML  = "owners:\n  - alice\n"
)

func buildDir(t *testing.T) string {
	return authztest.PolicyDir(t, map[string]string{
		"authz.rego":            authztest.HelloPolicy,
		"data.json":             authztest.HelloData,
		"mesh/routes.rego":      meshPolicy,
		"mesh/routes/data.json": routesData,
		"teams/data.yaml":       teamsYAML,
	})
}

// testKeys are PEM files of keys of each kind, made once: RSA keys take a
// while under -race.
var testKeys = sync.OnceValue(func() map[string][]byte {
	keys := map[string][]byte{}
	for _, name := range []string{"rsa", "rsa-other"} {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		keys[name] = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
		keys[name+".pub"] = publicPEM(&k.PublicKey)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		panic(err)
	}
	keys["ec"] = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	keys["ec.pub"] = publicPEM(&ec.PublicKey)
	keys["hmac"] = []byte("a secret of the mesh\n")
	keys["cert"] = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not one")})
	keys["garbage"] = []byte("neither PEM nor anything\n")
	return keys
})

func publicPEM(k any) []byte {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// keyFile writes the test key name to a 0600 file.
func keyFile(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".pem")
	if err := os.WriteFile(path, testKeys()[name], 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// readBundle reads path with OPA's reader, verifying with vc, or skipping
// verification when vc is nil.
func readBundle(t *testing.T, path string, vc *bundle.VerificationConfig) (bundle.Bundle, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	r := bundle.NewReader(bytes.NewReader(data))
	if vc != nil {
		r = r.WithBundleVerificationConfig(vc)
	} else {
		r = r.WithSkipBundleVerification(true)
	}
	return r.Read()
}

func verifyWith(key, alg, keyID, scope string) *bundle.VerificationConfig {
	return bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{keyID: {Key: key, Algorithm: alg}}, keyID, scope, nil)
}

func TestPolicyBuildWritesABundleOPAReads(t *testing.T) {
	dir := buildDir(t)
	out := filepath.Join(t.TempDir(), "bundle.tar.gz")
	stdout, _, err := runCmd(t, "policy", "build", dir, "-o", out)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(out); err != nil || info.Mode().Perm() != 0o644 {
		t.Fatalf("bundle file: %v, %v; want mode 0644", info, err)
	}
	b, err := readBundle(t, out, nil)
	if err != nil {
		t.Fatal(err)
	}

	// The revision is the one meshid logs decisions of the dir with.
	policies, err := authz.LoadPolicies(dir, ast.RegoV1)
	if err != nil {
		t.Fatal(err)
	}
	if want := decisionlog.NewPolicySet(dir, "v1", policies.Files).Revision; b.Manifest.Revision != want {
		t.Errorf("revision %q, want meshid's policy revision %q", b.Manifest.Revision, want)
	}
	if !strings.Contains(stdout, b.Manifest.Revision) {
		t.Errorf("stdout %q does not name the revision", stdout)
	}
	if got, want := *b.Manifest.Roots, []string{"envoy", "mesh", "methods", "teams"}; !slices.Equal(got, want) {
		t.Errorf("roots %q, want %q", got, want)
	}
	if b.Manifest.RegoVersion == nil || *b.Manifest.RegoVersion != 1 {
		t.Errorf("rego_version %v, want 1", b.Manifest.RegoVersion)
	}
	if b.Signatures.Signatures != nil {
		t.Errorf("an unsigned build has signatures %v", b.Signatures)
	}

	// Modules keep their paths and bytes, and compile together.
	var paths []string
	for _, m := range b.Modules {
		paths = append(paths, strings.TrimPrefix(m.Path, "/"))
		if want := policies.Files[strings.TrimPrefix(m.Path, "/")]; !bytes.Equal(m.Raw, want) {
			t.Errorf("%s: bundle holds %q, dir %q", m.Path, m.Raw, want)
		}
	}
	slices.Sort(paths)
	if want := []string{"authz.rego", "mesh/routes.rego"}; !slices.Equal(paths, want) {
		t.Errorf("modules %q, want %q", paths, want)
	}
	c := ast.NewCompiler()
	if c.Compile(b.ParsedModules("test")); c.Failed() {
		t.Fatalf("the bundle's modules do not compile: %v", c.Errors)
	}
	if len(c.GetRules(ast.MustParseRef("data.mesh.routes.public"))) == 0 {
		t.Error("data.mesh.routes.public is not defined by the bundle")
	}

	// Data documents are at their directories' paths.
	for ref, want := range map[string]string{
		"methods":           `["GET","HEAD"]`,
		"mesh.routes.paths": `["/hello","/healthz"]`,
		"teams.owners":      `["alice"]`,
	} {
		var at any = b.Data
		for _, key := range strings.Split(ref, ".") {
			at = at.(map[string]any)[key]
		}
		if got, _ := json.Marshal(at); string(got) != want {
			t.Errorf("data.%s = %s, want %s", ref, got, want)
		}
	}
}

func TestPolicyBuildManifestFlags(t *testing.T) {
	dir := buildDir(t)
	v0 := authztest.PolicyDir(t, map[string]string{"authz.rego": testPolicyV0})
	tests := []struct {
		name     string
		dir      string
		args     []string
		revision string // "" is meshid's revision of dir
		roots    []string
		version  int
	}{
		{"revision and roots", dir, []string{"--revision", "v42", "--root", "envoy", "--root", "mesh/routes", "--root", "methods", "--root", "teams"}, "v42", []string{"envoy", "mesh/routes", "methods", "teams"}, 1},
		{"slashes trimmed", dir, []string{"--root", "/envoy/", "--root", "mesh", "--root", "methods", "--root", "teams"}, "", []string{"envoy", "mesh", "methods", "teams"}, 1},
		{"rego v0", v0, []string{"--rego-version", "v0"}, "", []string{"envoy"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "b.tar.gz")
			if _, _, err := runCmd(t, append([]string{"policy", "build", tt.dir, "-o", out}, tt.args...)...); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(out)
			r := bundle.NewReader(bytes.NewReader(data))
			if tt.version == 0 {
				r = r.WithRegoVersion(ast.RegoV0)
			}
			b, err := r.Read()
			if err != nil {
				t.Fatal(err)
			}
			if tt.revision != "" && b.Manifest.Revision != tt.revision {
				t.Errorf("revision %q, want %q", b.Manifest.Revision, tt.revision)
			}
			if len(b.Manifest.Revision) == 0 {
				t.Error("no revision")
			}
			if !slices.Equal(*b.Manifest.Roots, tt.roots) {
				t.Errorf("roots %q, want %q", *b.Manifest.Roots, tt.roots)
			}
			if b.Manifest.RegoVersion == nil || *b.Manifest.RegoVersion != tt.version {
				t.Errorf("rego_version %v, want %d", b.Manifest.RegoVersion, tt.version)
			}
		})
	}
}

func TestPolicyBuildSigns(t *testing.T) {
	dir := buildDir(t)
	keys := testKeys()
	rsaPub, otherPub, ecPub, secret := string(keys["rsa.pub"]), string(keys["rsa-other.pub"]), string(keys["ec.pub"]), string(keys["hmac"])
	tests := []struct {
		name    string
		args    []string
		vc      *bundle.VerificationConfig
		wantErr string // "" verifies
	}{
		{"rsa, right key", []string{"--signing-key", keyFile(t, "rsa")}, verifyWith(rsaPub, "RS256", "global", ""), ""},
		{"rsa, key found by the token's key id", []string{"--signing-key", keyFile(t, "rsa"), "--key-id", "mesh"},
			bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{"mesh": {Key: rsaPub, Algorithm: "RS256"}}, "", "", nil), ""},
		{"rsa, another key", []string{"--signing-key", keyFile(t, "rsa")}, verifyWith(otherPub, "RS256", "global", ""), "verification"},
		{"rsa, PS256", []string{"--signing-key", keyFile(t, "rsa"), "--signing-alg", "PS256"}, verifyWith(rsaPub, "PS256", "global", ""), ""},
		{"ec, ES256 by default", []string{"--signing-key", keyFile(t, "ec"), "--key-id", "ec1"}, verifyWith(ecPub, "ES256", "ec1", ""), ""},
		{"hmac", []string{"--signing-key", keyFile(t, "hmac"), "--signing-alg", "HS256"}, verifyWith(secret, "HS256", "global", ""), ""},
		{"hmac, another secret", []string{"--signing-key", keyFile(t, "hmac"), "--signing-alg", "HS256"}, verifyWith("another secret", "HS256", "global", ""), "invalid HMAC signature"},
		{"scope kept", []string{"--signing-key", keyFile(t, "rsa"), "--scope", "write"}, verifyWith(rsaPub, "RS256", "global", "write"), ""},
		{"scope differs", []string{"--signing-key", keyFile(t, "rsa"), "--scope", "write"}, verifyWith(rsaPub, "RS256", "global", "read"), "scope mismatch"},
		{"unsigned refused by a verifier", nil, verifyWith(rsaPub, "RS256", "global", ""), ".signatures.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "b.tar.gz")
			if _, _, err := runCmd(t, append([]string{"policy", "build", dir, "-o", out}, tt.args...)...); err != nil {
				t.Fatal(err)
			}
			if _, err := readBundle(t, out, nil); err != nil {
				t.Fatalf("read without verification: %v", err)
			}
			b, err := readBundle(t, out, tt.vc)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				if len(b.Signatures.Signatures) != 1 {
					t.Fatalf("signatures %v, want one", b.Signatures.Signatures)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("verify: err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestPolicyBuildRefuses(t *testing.T) {
	dir := buildDir(t)
	broken := authztest.PolicyDir(t, map[string]string{"authz.rego": brokenPolicy})
	unparsable := authztest.PolicyDir(t, map[string]string{"a/authz.rego": unparsablePol})
	tests := []struct {
		name    string
		dir     string
		args    []string
		wantErr string
	}{
		{"compile error with position", broken, nil, filepath.Join(broken, "authz.rego") + ":4:2: rego_unsafe_var_error: var y is unsafe"},
		{"parse error with position", unparsable, nil, filepath.Join(unparsable, "a/authz.rego") + ":4:0: rego_parse_error: unexpected eof token"},
		{"decision not defined", dir, []string{"--decision", "mesh/authz/allow"}, "decision data.mesh.authz.allow is not defined"},
		{"overlapping roots", dir, []string{"--root", "envoy", "--root", "envoy/authz"}, "-root envoy and -root envoy/authz overlap"},
		{"package outside the roots", dir, []string{"--root", "envoy", "--root", "methods", "--root", "teams"}, "mesh/routes.rego: package mesh.routes is under none of the roots envoy,methods,teams"},
		{"data outside the roots", dir, []string{"--root", "envoy", "--root", "mesh", "--root", "methods"}, "data.teams is under none of the roots"},
		{"missing key", dir, []string{"--signing-key", filepath.Join(dir, "nope.pem")}, "signing key: open " + filepath.Join(dir, "nope.pem")},
		{"not PEM", dir, []string{"--signing-key", keyFile(t, "garbage")}, "garbage.pem: not PEM"},
		{"not a private key", dir, []string{"--signing-key", keyFile(t, "cert")}, `cert.pem: a PEM "CERTIFICATE" block, not a private key`},
		{"algorithm of another kind of key", dir, []string{"--signing-key", keyFile(t, "rsa"), "--signing-alg", "ES256"}, "rsa.pem: -signing-alg ES256 does not fit the key: want RS256"},
		{"PEM key as an HMAC secret", dir, []string{"--signing-key", keyFile(t, "rsa"), "--signing-alg", "HS256"}, "rsa.pem: a PEM key, not an HMAC secret"},
		{"unknown HMAC", dir, []string{"--signing-key", keyFile(t, "hmac"), "--signing-alg", "HS1"}, "-signing-alg HS1: want HS256"},
		{"key id without a key", dir, []string{"--key-id", "x"}, "-key-id without -signing-key"},
		{"no output", dir, []string{"-o", ""}, "-o FILE is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "b.tar.gz")
			_, _, err := runCmd(t, append([]string{"policy", "build", tt.dir, "-o", out}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if _, err := os.Stat(out); err == nil {
				t.Fatal("a refused build wrote the bundle")
			}
		})
	}
}
