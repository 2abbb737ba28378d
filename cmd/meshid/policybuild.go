package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/spf13/cobra"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/internal/atomicfile"
	"github.com/meshid/meshid/internal/pemkey"
)

// defaultBundleKeyID is the key id a signature names when --key-id is not
// given: the one docs/authz.md's authz.bundles signing.key_id names.
const defaultBundleKeyID = "global"

// newPolicyBuildCmd compiles a policy dir as policy check does and writes
// it as an OPA bundle, for a bundle service that authz.bundles (or any OPA)
// downloads from.
func newPolicyBuildCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "build DIR -o FILE.tar.gz",
		Short: "Compile a policy directory and write it as an OPA bundle, signed on request",
		Long: `Compile the .rego files and data documents in DIR as "meshid policy check"
does (errors as file:line:col), then write them as an OPA bundle (a gzipped
tar that OPA and meshid's authz.bundles read): the .rego files under their
paths in DIR, the data documents merged into data.json at the paths the
policy dir gives them (DIR/a/b/data.json is data.a.b), and a manifest.

The manifest's revision is --revision, by default the policy revision
meshid logs decisions of DIR with; its roots are --root, by default the
first segment of every package and of every data document's path (envoy
for package envoy.authz, methods for a data.json {"methods": ...} at the
top of DIR); its rego_version is --rego-version's.

With --signing-key the bundle carries OPA's .signatures.json: a JWT over
the digest of each file, signed with a PEM private key (RSA: RS256 by
default, or PS256, RS384...; EC: ES256 for P-256, ES384 for P-384, ES512
for P-521) or, with --signing-alg HS256 (HS384, HS512), with the bytes of
the file as an HMAC secret. The verifier names the key by --key-id and,
when it sets one, wants the same --scope.`,
		Example: `  meshid policy build policies/ -o bundle.tar.gz
  meshid policy build policies/ -o bundle.tar.gz --revision v42 --root envoy
  meshid policy build policies/ -o bundle.tar.gz --signing-key bundle-signing.pem --key-id mesh`,
		Args:              oneDir,
		ValidArgsFunction: completeDirs,
	}
	flags := cmd.Flags()
	out := flags.StringP("output", "o", "", "write the bundle to this `file` (0644, replaced whole)")
	revision := flags.String("revision", "", "the manifest's revision (default: meshid's policy revision of DIR)")
	roots := flags.StringArray("root", nil, "a manifest `root`, repeatable (default: the first segment of every package and data path)")
	decision := flags.String("decision", "", "also check that this `rule` is defined, as envoy/authz/allow or data.envoy.authz.allow")
	version := cli.RegoVersionFlag(cmd)
	signingKey := flags.String("signing-key", "", "sign the bundle with this `file`: a PEM private key (RSA or EC), or an HMAC secret with --signing-alg HS256")
	signingAlg := flags.String("signing-alg", "", "the signature `algorithm` (default RS256 for an RSA key, ES256/ES384/ES512 for an EC key by its curve)")
	keyID := flags.String("key-id", defaultBundleKeyID, "the `id` of the signing key, by which verifiers find theirs")
	scope := flags.String("scope", "", "the signature's `scope`, which a verifier that sets one checks")
	_ = cmd.MarkFlagFilename("output", "tar.gz")
	_ = cmd.MarkFlagFilename("signing-key", "pem", "key")
	_ = cmd.RegisterFlagCompletionFunc("signing-alg", cobra.FixedCompletions(
		[]string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256", "HS384", "HS512"}, cobra.ShellCompDirectiveNoFileComp))

	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if *out == "" {
			return cli.Usagef(cmd, "policy build: -o FILE is required (where the bundle goes)")
		}
		if err := checkRegoVersion(*version); err != nil {
			return cli.Usage(cmd, err)
		}
		opts := bundleOptions{revision: *revision, roots: *roots, regoVersion: *version}
		if *decision != "" {
			ref, err := decisionRef(*decision)
			if err != nil {
				return cli.Usage(cmd, err)
			}
			opts.decision = ref
		}
		if *signingKey == "" {
			for _, name := range []string{"signing-alg", "key-id", "scope"} {
				if flags.Changed(name) {
					return cli.Usagef(cmd, "policy build: -%s without -signing-key: there is nothing to sign with", name)
				}
			}
		} else {
			s, err := loadBundleSigner(*signingKey, *signingAlg)
			if err != nil {
				return err
			}
			s.keyID, s.scope = *keyID, *scope
			opts.signer = s
		}
		b, data, err := buildBundle(args[0], opts)
		if err != nil {
			return err
		}
		if err := atomicfile.Write(*out, data, 0o644); err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		fmt.Fprintf(w, "%s: bundle of %s, revision %s, roots %s, %d .rego files, %d bytes\n",
			*out, args[0], b.Manifest.Revision, strings.Join(*b.Manifest.Roots, ","), len(b.Modules), len(data))
		if opts.signer != nil {
			fmt.Fprintf(w, "%s: signed with %s (%s), key id %q\n", *out, *signingKey, opts.signer.config.Algorithm, opts.signer.keyID)
		}
		return nil
	}
	return cmd
}

// bundleOptions say what goes into a bundle's manifest and signature
// beside the policy dir's files.
type bundleOptions struct {
	revision    string   // "" is meshid's policy revision of the dir
	roots       []string // nil is the first segment of each package and data path
	regoVersion string   // "v1" or "v0"
	decision    string   // a data reference that must be defined; "" checks none
	signer      *bundleSigner
}

// buildBundle reads and compiles dir as policy check does and serializes
// it as an OPA bundle. It reads the result back with OPA's reader, which
// refuses what an OPA would refuse, before returning it.
func buildBundle(dir string, opts bundleOptions) (*bundle.Bundle, []byte, error) {
	version := ast.RegoV1
	if opts.regoVersion == "v0" {
		version = ast.RegoV0
	}
	policies, err := authz.LoadPolicies(dir, version)
	if err != nil {
		return nil, nil, err
	}
	compiler := ast.NewCompiler().WithDefaultRegoVersion(version)
	compiler.Compile(policies.Modules)
	if compiler.Failed() {
		errs := compiler.Errors
		errs.Sort()
		return nil, nil, fmt.Errorf("rego files in %s do not compile:\n%w", dir, locatedList(errs))
	}
	if opts.decision != "" {
		ref := ast.MustParseRef(opts.decision)
		if len(compiler.GetRules(ref)) == 0 && !dataDefines(policies.Data, ref) {
			return nil, nil, fmt.Errorf("decision %s is not defined by any rule in %s: check the package name and the rule name", opts.decision, dir)
		}
	}

	b := &bundle.Bundle{Data: policies.Data}
	paths := make([]string, 0, len(policies.Modules))
	for path := range policies.Modules {
		paths = append(paths, path)
	}
	slices.Sort(paths)
	for _, path := range paths {
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return nil, nil, err
		}
		rel = filepath.ToSlash(rel)
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: rel, Path: rel, Raw: policies.Files[rel], Parsed: policies.Modules[path]})
	}

	roots := opts.roots
	if roots == nil {
		roots = defaultRoots(policies)
	}
	if err := checkRoots(dir, roots, policies); err != nil {
		return nil, nil, err
	}
	revision := opts.revision
	if revision == "" {
		revision = decisionlog.NewPolicySet(dir, opts.regoVersion, policies.Files).Revision
	}
	b.Manifest = bundle.Manifest{Revision: revision, Roots: &roots}
	b.Manifest.SetRegoVersion(version)

	if s := opts.signer; s != nil {
		if err := s.sign(b); err != nil {
			return nil, nil, err
		}
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).UseModulePath(true).DisableFormat(true).Write(*b); err != nil {
		return nil, nil, fmt.Errorf("write the bundle of %s: %w", dir, err)
	}
	reader := bundle.NewReader(bytes.NewReader(buf.Bytes())).WithRegoVersion(version)
	if s := opts.signer; s != nil {
		reader = reader.WithBundleVerificationConfig(s.verification())
	}
	if _, err := reader.Read(); err != nil {
		return nil, nil, fmt.Errorf("the bundle of %s does not read back as OPA reads it: %w", dir, err)
	}
	return b, buf.Bytes(), nil
}

// defaultRoots are the first segments of every package and of every
// top-level data key, sorted: the narrowest roots that hold the bundle
// without naming each package.
func defaultRoots(p *authz.Policies) []string {
	seen := map[string]bool{}
	for _, m := range p.Modules {
		if len(m.Package.Path) > 1 {
			if s, ok := m.Package.Path[1].Value.(ast.String); ok {
				seen[string(s)] = true
			}
		}
	}
	for key := range p.Data {
		seen[key] = true
	}
	roots := make([]string, 0, len(seen))
	for r := range seen {
		roots = append(roots, r)
	}
	slices.Sort(roots)
	return roots
}

// checkRoots refuses roots that overlap or leave out a package or a data
// document of dir, naming the file, before OPA's reader would refuse the
// bundle in its own words.
func checkRoots(dir string, roots []string, p *authz.Policies) error {
	for i, r := range roots {
		roots[i] = strings.Trim(r, "/")
		if roots[i] == "" {
			return errors.New("-root \"\": a root names a data path such as envoy or envoy/authz (an empty one would own all of data, which OPA spells as no -root at all)")
		}
	}
	for i := range roots {
		for j := i + 1; j < len(roots); j++ {
			if bundle.RootPathsOverlap(roots[i], roots[j]) {
				return fmt.Errorf("-root %s and -root %s overlap: a path of data can belong to one root only", roots[i], roots[j])
			}
		}
	}
	var errs []error
	paths := make([]string, 0, len(p.Modules))
	for path := range p.Modules {
		paths = append(paths, path)
	}
	slices.Sort(paths)
	for _, path := range paths {
		pkg := p.Modules[path].Package.Path
		sp, err := storage.NewPathForRef(pkg)
		if err != nil || !rootsHold(roots, sp) {
			errs = append(errs, fmt.Errorf("%s: %s is under none of the roots %s", path, p.Modules[path].Package, strings.Join(roots, ",")))
		}
	}
	for _, key := range slices.Sorted(maps.Keys(p.Data)) {
		if !rootsHold(roots, storage.Path{key}) && !rootsUnder(roots, key) {
			errs = append(errs, fmt.Errorf("%s: data.%s is under none of the roots %s", dir, key, strings.Join(roots, ",")))
		}
	}
	return errors.Join(errs...)
}

// rootsHold says whether one of roots is a prefix of path.
func rootsHold(roots []string, path storage.Path) bool {
	return slices.ContainsFunc(roots, func(r string) bool {
		return path.HasPrefix(storage.Path(strings.Split(r, "/")))
	})
}

// rootsUnder says whether a root lies below the top-level data key key:
// then the data under key may still all be inside roots, which OPA's
// reader checks document by document.
func rootsUnder(roots []string, key string) bool {
	return slices.ContainsFunc(roots, func(r string) bool { return strings.HasPrefix(r, key+"/") })
}

// dataDefines says whether the data documents hold a value at ref.
func dataDefines(data map[string]any, ref ast.Ref) bool {
	var at any = data
	for _, t := range ref[1:] {
		obj, ok := at.(map[string]any)
		s, isString := t.Value.(ast.String)
		if !ok || !isString {
			return false
		}
		if at, ok = obj[string(s)]; !ok {
			return false
		}
	}
	return true
}

// locatedList prints OPA's errors one a line as file:line:col, as
// policy check does.
func locatedList(errs ast.Errors) error {
	lines := make([]string, 0, len(errs))
	for _, err := range errs {
		var b strings.Builder
		if loc := err.Location; loc != nil {
			fmt.Fprintf(&b, "%s:%d:%d: ", loc.File, loc.Row, loc.Col)
		}
		b.WriteString(err.Code + ": " + err.Message)
		lines = append(lines, b.String())
	}
	return errors.New(strings.Join(lines, "\n"))
}

// bundleSigner signs bundles with one key, the way OPA's bundle package
// does.
type bundleSigner struct {
	config *bundle.SigningConfig
	keyID  string
	scope  string
	// verify is what verifies the signature: the PEM public key of the
	// signing key, or the HMAC secret.
	verify string
}

// loadBundleSigner reads the key in path and settles the algorithm: alg
// if given (and it suits the key), else the usual one for the key.
func loadBundleSigner(path, alg string) (*bundleSigner, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	alg = strings.ToUpper(alg)
	if strings.HasPrefix(alg, "HS") {
		if !slices.Contains([]string{"HS256", "HS384", "HS512"}, alg) {
			return nil, fmt.Errorf("-signing-alg %s: want HS256, HS384 or HS512 for an HMAC secret", alg)
		}
		if len(raw) == 0 {
			return nil, fmt.Errorf("signing key %s: empty: an HMAC secret is the file's bytes", path)
		}
		if bytes.HasPrefix(raw, []byte("-----BEGIN")) {
			return nil, fmt.Errorf("signing key %s: a PEM key, not an HMAC secret: leave out -signing-alg %s (or give RS256, ES256...)", path, alg)
		}
		// By path: OPA's signing config reads the file itself, byte for
		// byte, as it does for "opa build --signing-key".
		return &bundleSigner{config: bundle.NewSigningConfig(path, alg, ""), verify: string(raw)}, nil
	}

	key, err := pemkey.Parse(raw)
	if errors.Is(err, pemkey.ErrNotPEM) {
		return nil, fmt.Errorf("signing key %s: not PEM: want a PEM private key (RSA or EC), or -signing-alg HS256 for an HMAC secret", path)
	}
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	var fits []string
	var public any
	switch k := key.(type) {
	case *rsa.PrivateKey:
		fits = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
		public = k.Public()
	case *ecdsa.PrivateKey:
		public = k.Public()
		switch k.Curve {
		case elliptic.P256():
			fits = []string{"ES256"}
		case elliptic.P384():
			fits = []string{"ES384"}
		case elliptic.P521():
			fits = []string{"ES512"}
		default:
			return nil, fmt.Errorf("signing key %s: EC curve %s: want P-256, P-384 or P-521", path, k.Curve.Params().Name)
		}
	default:
		return nil, fmt.Errorf("signing key %s: a %T, not an RSA or EC private key", path, key)
	}
	if alg == "" {
		alg = fits[0]
	} else if !slices.Contains(fits, alg) {
		return nil, fmt.Errorf("signing key %s: -signing-alg %s does not fit the key: want %s", path, alg, strings.Join(fits, ", "))
	}
	der, err := x509.MarshalPKIXPublicKey(public)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	// The key's PEM block itself, in its own encoding (Parse read it), so
	// that nothing reads the file a second time.
	block, _ := pem.Decode(raw)
	return &bundleSigner{
		config: bundle.NewSigningConfig(string(pem.EncodeToMemory(block)), alg, ""),
		verify: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
	}, nil
}

// verification is how a verifier that has the right key checks the
// signatures s makes.
func (s *bundleSigner) verification() *bundle.VerificationConfig {
	key := &bundle.KeyConfig{Key: s.verify, Algorithm: s.config.Algorithm, Scope: s.scope}
	return bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{s.keyID: key}, s.keyID, s.scope, nil)
}

// sign puts the signature of b, as it is now, into b.Signatures. The
// scope is a claim of the token, which OPA's signing config takes only
// from a claims file: one is written for the occasion and removed.
func (s *bundleSigner) sign(b *bundle.Bundle) error {
	config := *s.config
	if s.scope != "" {
		claims, err := json.Marshal(map[string]string{"keyid": s.keyID, "scope": s.scope})
		if err != nil {
			return err
		}
		f, err := os.CreateTemp("", "meshid-bundle-claims-*.json")
		if err != nil {
			return fmt.Errorf("sign the bundle: %w", err)
		}
		defer os.Remove(f.Name())
		_, err = f.Write(claims)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sign the bundle: %w", err)
		}
		config.ClaimsPath = f.Name()
	}
	if err := b.GenerateSignature(&config, s.keyID, true); err != nil {
		return fmt.Errorf("sign the bundle: %w", err)
	}
	return nil
}
