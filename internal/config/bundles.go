package config

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Bundle is one OPA bundle meshid downloads from a bundle service and
// decides with, together with the policy dir and the other bundles
// (docs/authz.md § Bundles).
type Bundle struct {
	// Name names the bundle in OPA's sense (decision logs' "bundles")
	// and its copy on disk, data_dir/bundles/<name>/.
	Name    string  `yaml:"name"`
	Service Service `yaml:"service"`
	// Resource is the bundle's path on the service, OPA's "resource";
	// empty: bundles/<name>.
	Resource       string        `yaml:"resource"`
	Polling        BundlePolling `yaml:"polling"`
	SizeLimitBytes int64         `yaml:"size_limit_bytes"`
	// Signing is how the bundle's signature is verified; it is required
	// unless Unsigned says, in so many words, that none is wanted.
	Signing  *BundleSigning `yaml:"signing"`
	Unsigned bool           `yaml:"unsigned"`
}

// BundlePolling is how often the service is asked for a newer bundle:
// a random delay between MinDelay and MaxDelay after each answer, or,
// with LongPollingTimeout, a request the service holds open until it has
// a new bundle or the timeout passes. OPA counts them in whole seconds.
type BundlePolling struct {
	MinDelay           time.Duration `yaml:"min_delay"`
	MaxDelay           time.Duration `yaml:"max_delay"`
	LongPollingTimeout time.Duration `yaml:"long_polling_timeout"`
}

// BundleSigning verifies a bundle's .signatures.json: the key that must
// have signed it and the scope the signature must name.
type BundleSigning struct {
	// KeyID names the key. As in OPA, every signature is verified with
	// it, whatever key id the signature names.
	KeyID string `yaml:"key_id"`
	// Algorithm is the JWS algorithm the key signs with; empty: RS256.
	Algorithm string `yaml:"algorithm"`
	// PublicKeyFile holds the PEM public key.
	PublicKeyFile string `yaml:"public_key_file"`
	// Scope, if set, must be the signature's scope claim.
	Scope string `yaml:"scope"`
}

// Defaults of a bundle source. OPA polls every 60 to 120 seconds; a mesh
// changes its policies more often than that and wants every node on the
// new one soon, and a 304 costs the service a few hundred bytes.
const (
	DefaultBundleMinDelay  = 10 * time.Second
	DefaultBundleMaxDelay  = 20 * time.Second
	DefaultBundleSizeLimit = 64 << 20
	DefaultBundleAlgorithm = "RS256"
)

// BundleAlgorithms are the signing algorithms a bundle may be verified
// with: public-key ones only. An HMAC secret on every node would let
// any node's root sign bundles for the whole mesh.
var BundleAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}

var bundleName = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

func (a *Authz) bundleDefaults() {
	for i := range a.Bundles {
		b := &a.Bundles[i]
		b.Service.applyDefaults()
		if b.Resource == "" {
			b.Resource = "bundles/" + b.Name
		}
		// One delay given: the other's default, moved so that they still
		// make a range.
		switch p := &b.Polling; {
		case p.MinDelay == 0 && p.MaxDelay == 0:
			p.MinDelay, p.MaxDelay = DefaultBundleMinDelay, DefaultBundleMaxDelay
		case p.MinDelay == 0:
			p.MinDelay = min(DefaultBundleMinDelay, p.MaxDelay)
		case p.MaxDelay == 0:
			p.MaxDelay = max(DefaultBundleMaxDelay, p.MinDelay)
		}
		if b.SizeLimitBytes == 0 {
			b.SizeLimitBytes = DefaultBundleSizeLimit
		}
		if s := b.Signing; s != nil && s.Algorithm == "" {
			s.Algorithm = DefaultBundleAlgorithm
		}
	}
}

func (a *Authz) bundlePaths() []*string {
	var ps []*string
	for i := range a.Bundles {
		b := &a.Bundles[i]
		ps = append(ps, b.Service.paths()...)
		if b.Signing != nil {
			ps = append(ps, &b.Signing.PublicKeyFile)
		}
	}
	return ps
}

func (a Authz) validateBundles(bad func(path []any, format string, args ...any)) {
	seen := map[string]bool{}
	for i, b := range a.Bundles {
		key := func(k ...any) []any { return append(at("authz", "bundles", i), k...) }
		name := fmt.Sprintf("authz.bundles[%d]", i)
		switch {
		case b.Name == "":
			bad(key("name"), "%s.name is required: it names the bundle in decision logs and its copy in data_dir/bundles/", name)
		case !bundleName.MatchString(b.Name) || b.Name == "." || b.Name == "..":
			bad(key("name"), "%s.name %q: want letters, digits, '.', '_' and '-' only (it names a directory)", name, b.Name)
		case seen[strings.ToLower(b.Name)]:
			// Case too: on a file system that ignores it, two such names
			// would share one directory in data_dir/bundles/.
			bad(key("name"), "%s.name %q is the name of another bundle too (names are compared ignoring case)", name, b.Name)
		}
		seen[strings.ToLower(b.Name)] = true
		b.Service.validate(key("service"), name+".service", bad)
		b.Polling.validate(key("polling"), name+".polling", bad)
		if b.SizeLimitBytes < 1 {
			bad(key("size_limit_bytes"), "%s.size_limit_bytes %d must be at least 1", name, b.SizeLimitBytes)
		}
		switch s := b.Signing; {
		case s == nil && !b.Unsigned:
			bad(key(), "%s (%s) has no signing: set signing (key_id, public_key_file) to verify its signature, or unsigned: true to accept bundles anyone who can answer for %s may serve", name, b.Name, b.Service.URL)
		case s != nil && b.Unsigned:
			bad(key("unsigned"), "%s: unsigned: true and signing exclude each other", name)
		case s != nil:
			if s.KeyID == "" {
				bad(key("signing", "key_id"), "%s.signing.key_id is required", name)
			}
			if s.PublicKeyFile == "" {
				bad(key("signing", "public_key_file"), "%s.signing.public_key_file is required", name)
			}
			if !slices.Contains(BundleAlgorithms, s.Algorithm) {
				bad(key("signing", "algorithm"), "%s.signing.algorithm %q: want one of %v", name, s.Algorithm, BundleAlgorithms)
			}
		}
	}
}

func (p BundlePolling) validate(path []any, name string, bad func(path []any, format string, args ...any)) {
	key := func(k string) []any { return append(append([]any{}, path...), k) }
	whole := func(d time.Duration) bool { return d%time.Second == 0 }
	if p.MinDelay < time.Second || !whole(p.MinDelay) {
		bad(key("min_delay"), "%s.min_delay %s: want whole seconds, at least 1s", name, p.MinDelay)
	}
	if p.MaxDelay < p.MinDelay || !whole(p.MaxDelay) {
		bad(key("max_delay"), "%s.max_delay %s: want whole seconds, no less than min_delay %s", name, p.MaxDelay, p.MinDelay)
	}
	if p.LongPollingTimeout < 0 || !whole(p.LongPollingTimeout) {
		bad(key("long_polling_timeout"), "%s.long_polling_timeout %s: want 0 (poll) or whole seconds", name, p.LongPollingTimeout)
	}
}
