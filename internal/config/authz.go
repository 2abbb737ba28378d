package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Authz configures the ext_authz server. docs/authz.md describes every key.
type Authz struct {
	// Address serves Envoy's gRPC ext_authz: "host:port" or "unix:///path".
	Address string `yaml:"address"`
	// HTTPAddress serves Envoy's HTTP ext_authz protocol with the same
	// policies, "host:port" or "unix:///path"; empty: off.
	HTTPAddress string `yaml:"http_address"`
	// Reflection registers gRPC server reflection on Address.
	Reflection bool `yaml:"reflection"`
	// PolicyDir holds local policies; default "policies" unless Bundles
	// are set, when it may be left out.
	PolicyDir string `yaml:"policy_dir"`
	// Bundles are OPA bundles from bundle services (bundles.go).
	Bundles     []Bundle `yaml:"bundles"`
	Decision    string   `yaml:"decision"`
	RegoVersion string   `yaml:"rego_version"`
	// InputEncoding is how input.attributes is written: "protomap", as
	// the current OPA-Envoy plugin walks the proto, or "protojson", as
	// older plugins wrote it.
	InputEncoding string `yaml:"input_encoding"`
	// EvalTimeout bounds a whole decision: the input (its body parsed)
	// and the evaluation.
	EvalTimeout time.Duration `yaml:"eval_timeout"`
	// ReloadInterval is how often the policy dir is checked for changes
	// besides the file-system watch; 0 relies on the watch alone.
	ReloadInterval time.Duration `yaml:"reload_interval"`
	// DenyStatus is the HTTP status of denies the policy gave no status.
	DenyStatus int  `yaml:"deny_status"`
	DryRun     bool `yaml:"dry_run"`
	// MaxBodyBytes is the largest request body parsed into parsed_body;
	// a longer one is left unparsed (null), as sent in attributes.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxBodyDepth and MaxBodyValues bound parsed_body's shape: deeper
	// or more is a deny.
	MaxBodyDepth  int `yaml:"max_body_depth"`
	MaxBodyValues int `yaml:"max_body_values"`
	// DecisionLog is where decisions are logged: a file (or stderr), a
	// collector, both, or neither (decisionlog.go).
	DecisionLog           DecisionLog `yaml:"decision_log"`
	DecisionLogMask       []string    `yaml:"decision_log_mask"`
	DecisionLogQueue      int         `yaml:"decision_log_queue"`
	DecisionLogSampleRate float64     `yaml:"decision_log_sample_rate"`
	// DecisionLogMaxFieldBytes caps each logged string, parsed_body and
	// the result; DecisionLogMaxInputBytes the logged input as a whole.
	DecisionLogMaxFieldBytes int `yaml:"decision_log_max_field_bytes"`
	DecisionLogMaxInputBytes int `yaml:"decision_log_max_input_bytes"`
	// DecisionLogMaxBytes rotates a decision log file past this size (0:
	// never), keeping DecisionLogMaxFiles rotated files; stderr is never
	// rotated.
	DecisionLogMaxBytes int64 `yaml:"decision_log_max_bytes"`
	DecisionLogMaxFiles int   `yaml:"decision_log_max_files"`
	// DecisionLogExplain is "deny" to give each denial's decision log
	// line a one-line reason, or empty for none.
	DecisionLogExplain string `yaml:"decision_log_explain"`
	// ProtoDescriptor is a binary FileDescriptorSet that decodes gRPC
	// request bodies into input.parsed_body; empty leaves them unparsed.
	ProtoDescriptor string `yaml:"proto_descriptor"`
	// JWTAudiences turns on input.spiffe.jwt; a JWT-SVID must name one.
	JWTAudiences []string `yaml:"jwt_audiences"`
	XFCC         XFCC     `yaml:"xfcc"`
	TLS          AuthzTLS `yaml:"tls"`
	// Cache is the decision cache (docs/authz.md, "Decision cache").
	Cache AuthzCache `yaml:"cache"`
}

// AuthzCache bounds the decision cache; a bound of 0 is no bound of that
// kind, and one of them must be set.
type AuthzCache struct {
	Enabled    bool  `yaml:"enabled"`
	MaxEntries int   `yaml:"max_entries"`
	MaxBytes   int64 `yaml:"max_bytes"`
}

// AuthzTLS serves address and http_address over mutual TLS with an
// X509-SVID meshid's CA mints for meshid itself, so Envoys on other hosts
// can reach the authz server safely.
type AuthzTLS struct {
	// SPIFFEID is meshid's own ID on the authz listeners, in its trust
	// domain; empty serves them in plaintext.
	SPIFFEID string `yaml:"spiffe_id"`
	// ClientIDs are the SPIFFE IDs allowed to ask for decisions; empty
	// allows any X509-SVID of the trust domain.
	ClientIDs []string `yaml:"client_ids"`
}

// XFCC says whether input.spiffe.source may come from the
// x-forwarded-client-cert header, and from which proxies.
type XFCC struct {
	Trust   bool     `yaml:"trust"`
	Proxies []string `yaml:"proxies"`
}

func defaultAuthz() Authz {
	return Authz{
		Address:        "127.0.0.1:9191",
		PolicyDir:      "policies",
		Decision:       "data.envoy.authz.allow",
		RegoVersion:    "v1",
		InputEncoding:  "protomap",
		EvalTimeout:    100 * time.Millisecond,
		ReloadInterval: 10 * time.Second,
		DenyStatus:     403,
		// docs/authz.md, "Request bodies", says why these.
		MaxBodyBytes:          1 << 20,
		MaxBodyDepth:          64,
		MaxBodyValues:         10000,
		DecisionLogMask:       []string{"authorization", "proxy-authorization", "cookie"},
		DecisionLogQueue:      1024,
		DecisionLogSampleRate: 1,
		// docs/authz.md, "Decision logs".
		DecisionLogMaxFieldBytes: 8 << 10,
		DecisionLogMaxInputBytes: 64 << 10,
		DecisionLogMaxBytes:      100 << 20,
		DecisionLogMaxFiles:      5,
		// docs/authz.md, "Decision cache".
		Cache: AuthzCache{Enabled: true, MaxEntries: 10000, MaxBytes: 8 << 20},
	}
}

// Bounds of the size settings: a body nests at least 2 deep (a form is an
// object of lists), and deeper than 1000 levels is no API's shape; a
// field cut to fewer than 64 bytes says too little of what it was; a
// rotated file smaller than 1 MiB holds a handful of decisions.
const (
	minBodyDepth        = 2
	maxBodyDepth        = 1000
	minLogFieldBytes    = 64
	minDecisionLogBytes = 1 << 20
)

// DecisionLogStderr is the decision_log value that writes to stderr.
const DecisionLogStderr = "stderr"

// DecisionLogExplainDeny is the decision_log_explain value that explains
// denials.
const DecisionLogExplainDeny = "deny"

// UnixPrefix marks an address that is a Unix socket path.
const UnixPrefix = "unix://"

// paths lists the file paths of the section, to be resolved against the
// config file's directory.
func (a *Authz) paths() []*string {
	ps := append([]*string{&a.PolicyDir}, a.bundlePaths()...)
	if a.ProtoDescriptor != "" {
		ps = append(ps, &a.ProtoDescriptor)
	}
	return append(ps, a.DecisionLog.paths()...)
}

func (a Authz) validate(trustDomain string, bad func(path []any, format string, args ...any)) {
	if err := checkListenAddress(a.Address); err != nil {
		bad(at("authz", "address"), "authz.address: %v", err)
	}
	if a.HTTPAddress != "" {
		if err := checkListenAddress(a.HTTPAddress); err != nil {
			bad(at("authz", "http_address"), "authz.http_address: %v", err)
		} else if a.HTTPAddress == a.Address {
			bad(at("authz", "http_address"), "authz.http_address %s is authz.address too; the gRPC and HTTP servers need one each", a.HTTPAddress)
		}
	}
	if a.PolicyDir == "" && len(a.Bundles) == 0 {
		bad(at("authz", "policy_dir"), "authz.policy_dir must not be empty unless authz.bundles are set")
	}
	a.validateBundles(bad)
	if a.Decision == "" {
		bad(at("authz", "decision"), "authz.decision must not be empty")
	}
	if a.RegoVersion != "v1" && a.RegoVersion != "v0" {
		bad(at("authz", "rego_version"), "authz.rego_version %q: want v1 or v0", a.RegoVersion)
	}
	if a.InputEncoding != "protomap" && a.InputEncoding != "protojson" {
		bad(at("authz", "input_encoding"), "authz.input_encoding %q: want protomap (the current OPA-Envoy plugin's) or protojson (older plugins')", a.InputEncoding)
	}
	if a.EvalTimeout <= 0 {
		bad(at("authz", "eval_timeout"), "authz.eval_timeout must be positive")
	}
	if a.ReloadInterval < 0 || (a.ReloadInterval > 0 && a.ReloadInterval < time.Second) {
		bad(at("authz", "reload_interval"), "authz.reload_interval %s: want 0 (watch only) or at least 1s", a.ReloadInterval)
	}
	if a.DenyStatus < 300 || a.DenyStatus > 599 {
		bad(at("authz", "deny_status"), "authz.deny_status %d: want a 3xx, 4xx or 5xx HTTP status", a.DenyStatus)
	}
	if a.MaxBodyBytes < 1 {
		bad(at("authz", "max_body_bytes"), "authz.max_body_bytes %d must be at least 1", a.MaxBodyBytes)
	}
	if a.MaxBodyDepth < minBodyDepth || a.MaxBodyDepth > maxBodyDepth {
		bad(at("authz", "max_body_depth"), "authz.max_body_depth %d: want %d to %d (a form body is %d deep)", a.MaxBodyDepth, minBodyDepth, maxBodyDepth, minBodyDepth)
	}
	if a.MaxBodyValues < 1 {
		bad(at("authz", "max_body_values"), "authz.max_body_values %d must be at least 1", a.MaxBodyValues)
	}
	if a.DecisionLogMaxFieldBytes < minLogFieldBytes {
		bad(at("authz", "decision_log_max_field_bytes"), "authz.decision_log_max_field_bytes %d must be at least %d", a.DecisionLogMaxFieldBytes, minLogFieldBytes)
	}
	if a.DecisionLogMaxInputBytes < a.DecisionLogMaxFieldBytes {
		bad(at("authz", "decision_log_max_input_bytes"), "authz.decision_log_max_input_bytes %d is less than authz.decision_log_max_field_bytes %d: the input holds the fields", a.DecisionLogMaxInputBytes, a.DecisionLogMaxFieldBytes)
	}
	if a.DecisionLogMaxBytes != 0 && a.DecisionLogMaxBytes < minDecisionLogBytes {
		bad(at("authz", "decision_log_max_bytes"), "authz.decision_log_max_bytes %d: want 0 (never rotate) or at least %d (1 MiB)", a.DecisionLogMaxBytes, minDecisionLogBytes)
	}
	if a.DecisionLogMaxBytes != 0 && a.DecisionLogMaxFiles < 1 {
		bad(at("authz", "decision_log_max_files"), "authz.decision_log_max_files %d must be at least 1 when authz.decision_log_max_bytes rotates the file", a.DecisionLogMaxFiles)
	}
	if a.DecisionLogExplain != "" && a.DecisionLogExplain != DecisionLogExplainDeny {
		bad(at("authz", "decision_log_explain"), "authz.decision_log_explain %q: want deny (explain denials) or nothing", a.DecisionLogExplain)
	}
	if a.DecisionLogQueue < 1 {
		bad(at("authz", "decision_log_queue"), "authz.decision_log_queue %d must be at least 1", a.DecisionLogQueue)
	}
	if a.DecisionLogSampleRate <= 0 || a.DecisionLogSampleRate > 1 {
		bad(at("authz", "decision_log_sample_rate"), "authz.decision_log_sample_rate %v: want a fraction in (0, 1]", a.DecisionLogSampleRate)
	}
	for i, h := range a.DecisionLogMask {
		if h == "" || h != strings.ToLower(h) {
			bad(at("authz", "decision_log_mask", i), "authz.decision_log_mask: %q: want a lower-case header name, as Envoy sends them", h)
		}
	}
	for i, aud := range a.JWTAudiences {
		if aud == "" {
			bad(at("authz", "jwt_audiences", i), "authz.jwt_audiences: an audience must not be empty")
		}
	}
	if len(a.XFCC.Proxies) > 0 && !a.XFCC.Trust {
		bad(at("authz", "xfcc", "proxies"), "authz.xfcc.proxies is set but authz.xfcc.trust is false: set trust: true to use them")
	}
	for i, p := range a.XFCC.Proxies {
		if _, err := spiffeid.FromString(p); err != nil {
			bad(at("authz", "xfcc", "proxies", i), "authz.xfcc.proxies: %q is not a SPIFFE ID: %v", p, err)
		}
	}
	a.DecisionLog.validate(bad)
	a.TLS.validate(trustDomain, bad)
	a.Cache.validate(bad)
}

func (c AuthzCache) validate(bad func(path []any, format string, args ...any)) {
	if c.MaxEntries < 0 {
		bad(at("authz", "cache", "max_entries"), "authz.cache.max_entries %d: want 0 (no bound by count) or more", c.MaxEntries)
	}
	if c.MaxBytes < 0 {
		bad(at("authz", "cache", "max_bytes"), "authz.cache.max_bytes %d: want 0 (no bound by size) or more", c.MaxBytes)
	}
	if c.Enabled && c.MaxEntries == 0 && c.MaxBytes == 0 {
		bad(at("authz", "cache"), "authz.cache is enabled without a bound: set max_entries, max_bytes or both")
	}
}

func (t AuthzTLS) validate(trustDomain string, bad func(path []any, format string, args ...any)) {
	if t.SPIFFEID == "" {
		if len(t.ClientIDs) > 0 {
			bad(at("authz", "tls", "client_ids"), "authz.tls.client_ids is set but authz.tls.spiffe_id is empty: the listeners are plaintext and see no client certificate")
		}
		return
	}
	td, tdErr := spiffeid.TrustDomainFromString(trustDomain)
	if id, err := spiffeid.FromString(t.SPIFFEID); err != nil {
		bad(at("authz", "tls", "spiffe_id"), "authz.tls.spiffe_id %q is not a SPIFFE ID: %v", t.SPIFFEID, err)
	} else if tdErr == nil && !id.MemberOf(td) {
		bad(at("authz", "tls", "spiffe_id"), "authz.tls.spiffe_id %q is outside the trust domain %q: meshid's CA can only mint its own", t.SPIFFEID, trustDomain)
	}
	for i, c := range t.ClientIDs {
		if id, err := spiffeid.FromString(c); err != nil {
			bad(at("authz", "tls", "client_ids", i), "authz.tls.client_ids: %q is not a SPIFFE ID: %v", c, err)
		} else if tdErr == nil && !id.MemberOf(td) {
			bad(at("authz", "tls", "client_ids", i), "authz.tls.client_ids: %q is outside the trust domain %q, whose CA is the only one the listeners trust", c, trustDomain)
		}
	}
}

// checkListenAddress accepts "host:port" and "unix:///absolute/path"
// (absolute, so it needs no resolving against the config file's dir).
func checkListenAddress(addr string) error {
	path, ok := strings.CutPrefix(addr, UnixPrefix)
	if !ok {
		return checkHostPort(addr)
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("%q: want unix:///absolute/path", addr)
	}
	return nil
}
