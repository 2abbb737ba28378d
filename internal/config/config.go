// Package config owns meshid's configuration file: its shape, its defaults
// and its validation. It never starts anything; cmd/meshid turns a Config
// into running parts.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/internal/unixsock"
	"github.com/meshid/meshid/internal/yamlfile"
)

// Config is the whole of meshid.yaml. Field names follow DESIGN.md.
type Config struct {
	TrustDomain string     `yaml:"trust_domain"`
	DataDir     string     `yaml:"data_dir"`
	SocketPath  string     `yaml:"socket_path"`
	EntriesFile string     `yaml:"entries_file"`
	CA          CA         `yaml:"ca"`
	SVID        SVID       `yaml:"svid"`
	Authz       Authz      `yaml:"authz"`
	Federation  Federation `yaml:"federation"`
	Admin       Admin      `yaml:"admin"`
	Log         Log        `yaml:"log"`
	Limits      Limits     `yaml:"limits"`

	// What callers are attested by: unix always, docker and k8s only
	// when their section is present.
	Unix   Unix    `yaml:"unix"`
	Docker *Docker `yaml:"docker"`
	K8s    *K8s    `yaml:"k8s"`

	// EntriesOptional is true when entries_file was not set: a missing
	// default file then means "no entries yet" rather than a typo.
	EntriesOptional bool `yaml:"-"`
}

// CA configures the built-in certificate authority.
type CA struct {
	KeyType string        `yaml:"key_type"`
	TTL     time.Duration `yaml:"ttl"`
	// Upstream makes meshid's CA an intermediate of an existing root.
	Upstream *Upstream `yaml:"upstream"`
}

// SVID configures the identities meshid issues.
type SVID struct {
	X509TTL time.Duration `yaml:"x509_ttl"`
	JWTTTL  time.Duration `yaml:"jwt_ttl"`
}

// Admin configures meshid's two admin endpoints, split by what they
// reveal: Address serves what any local user may see (/healthz, /readyz,
// /metrics) over TCP; SocketPath serves what only root may (/explain: the
// entries and other processes' selectors) on a Unix socket of mode 0600.
type Admin struct {
	Address    string `yaml:"address"`
	SocketPath string `yaml:"socket_path"` // empty: admin.sock beside socket_path
}

// AdminSocketPath is where the root-only admin socket is: admin.socket_path,
// or admin.sock in socket_path's directory.
func (c Config) AdminSocketPath() string {
	if c.Admin.SocketPath != "" {
		return c.Admin.SocketPath
	}
	return filepath.Join(filepath.Dir(c.SocketPath), "admin.sock")
}

// Log configures meshid's own log output.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Floors that keep a typo from turning into an outage or a security hole.
// Entries' own TTLs have the same floors (identity.MinX509TTL, MinJWTTTL).
const (
	// MinX509TTL is the shortest SVID lifetime accepted; shorter ones leave
	// Envoy too little time to pick up the renewed certificate.
	MinX509TTL = 10 * time.Second
	// MinJWTTTL keeps a JWT-SVID usable across one network round trip.
	MinJWTTTL = 30 * time.Second
	minCATTL  = time.Hour
)

// DefaultSocketPath is socket_path when the config does not set it, and
// where the CLI looks for meshid. /run is root's and 0755, so no other user
// can create meshid's directory there first, as they could in /tmp (issue
// 13; the rules are internal/unixsock's).
const DefaultSocketPath = "/run/meshid/agent.sock"

// Default returns the configuration used when no file is given: a demo
// trust domain served from the current directory.
func Default() Config {
	return Config{
		TrustDomain:     "example.org",
		DataDir:         ".meshid",
		SocketPath:      DefaultSocketPath,
		EntriesFile:     "entries.yaml",
		EntriesOptional: true,
		CA:              CA{KeyType: "ec-p256", TTL: 24 * time.Hour},
		SVID:            SVID{X509TTL: time.Hour, JWTTTL: 5 * time.Minute},
		Authz:           defaultAuthz(),
		Admin:           Admin{Address: "127.0.0.1:8089"},
		Log:             Log{Level: "info", Format: "text"},
		Limits:          defaultLimits(),
	}
}

// Load reads and validates the file at path. Relative paths inside the file
// are resolved against the file's directory, so a config works the same from
// any working directory. Every problem is reported, each as file:line.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg := Default()
	cfg.EntriesFile = ""
	cfg.Authz.PolicyDir = ""
	doc, err := yamlfile.Decode(path, data, &cfg)
	if err != nil {
		return Config{}, err
	}
	if cfg.EntriesFile == "" {
		cfg.EntriesFile = Default().EntriesFile
	} else {
		cfg.EntriesOptional = false
	}
	cfg.attestDefaults()
	cfg.upstreamDefaults()
	cfg.Federation.applyDefaults()
	if cfg.Authz.PolicyDir == "" && len(cfg.Authz.Bundles) == 0 {
		cfg.Authz.PolicyDir = Default().Authz.PolicyDir
	}
	cfg.Authz.bundleDefaults()
	base, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return Config{}, fmt.Errorf("resolve config dir: %w", err)
	}
	cfg.resolve(base)
	if err := cfg.validate(doc); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// resolve makes every relative path absolute against base.
func (c *Config) resolve(base string) {
	paths := append([]*string{&c.DataDir, &c.SocketPath, &c.EntriesFile, &c.Admin.SocketPath}, c.Authz.paths()...)
	paths = append(paths, c.attestPaths()...)
	paths = append(paths, c.Federation.paths()...)
	paths = append(paths, c.CA.Upstream.paths()...)
	for _, p := range paths {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(base, *p)
		}
	}
}

// Validate checks a configuration that did not come from a file (Default).
func (c Config) Validate() error { return c.validate(nil) }

func (c Config) validate(doc *yamlfile.Doc) error {
	var errs []error
	bad := func(path []any, format string, args ...any) {
		if doc == nil {
			errs = append(errs, fmt.Errorf(format, args...))
			return
		}
		errs = append(errs, doc.Errorf(path, format, args...))
	}
	if _, err := spiffeid.TrustDomainFromString(c.TrustDomain); err != nil {
		bad(at("trust_domain"), "trust_domain %q: %v", c.TrustDomain, err)
	}
	for _, f := range []struct {
		key, val string
	}{{"data_dir", c.DataDir}, {"socket_path", c.SocketPath}, {"entries_file", c.EntriesFile}} {
		if f.val == "" {
			bad(at(f.key), "%s must not be empty", f.key)
		}
	}
	if n := len(c.SocketPath); n > unixsock.MaxPathLen {
		bad(at("socket_path"), "socket_path %s is %d bytes, longer than the %d a Unix socket path may have; choose a shorter path", c.SocketPath, n, unixsock.MaxPathLen)
	}
	switch admin := c.AdminSocketPath(); {
	case admin == c.SocketPath:
		bad(at("admin", "socket_path"), "admin.socket_path %s is socket_path too: the root-only admin socket needs a path of its own", admin)
	case len(admin) > unixsock.MaxPathLen:
		bad(at("admin", "socket_path"), "admin.socket_path %s is %d bytes, longer than the %d a Unix socket path may have; choose a shorter path", admin, len(admin), unixsock.MaxPathLen)
	}
	if c.CA.KeyType != "ec-p256" {
		bad(at("ca", "key_type"), "ca.key_type %q is not supported (supported: ec-p256)", c.CA.KeyType)
	}
	if c.CA.TTL < minCATTL {
		bad(at("ca", "ttl"), "ca.ttl %s is shorter than the minimum %s", c.CA.TTL, minCATTL)
	}
	if c.SVID.X509TTL < MinX509TTL {
		bad(at("svid", "x509_ttl"), "svid.x509_ttl %s is shorter than the minimum %s", c.SVID.X509TTL, MinX509TTL)
	}
	if c.SVID.X509TTL > c.CA.TTL {
		bad(at("svid", "x509_ttl"), "svid.x509_ttl %s is longer than ca.ttl %s", c.SVID.X509TTL, c.CA.TTL)
	}
	if c.SVID.JWTTTL < MinJWTTTL {
		bad(at("svid", "jwt_ttl"), "svid.jwt_ttl %s is shorter than the minimum %s", c.SVID.JWTTTL, MinJWTTTL)
	}
	c.CA.Upstream.validate(bad)
	c.Authz.validate(c.TrustDomain, bad)
	c.validateAttest(bad)
	c.Federation.validate(c.TrustDomain, bad)
	c.Limits.validate(bad)
	if err := checkHostPort(c.Admin.Address); err != nil {
		bad(at("admin", "address"), "admin.address: %v", err)
	}
	if _, err := c.Log.SlogLevel(); err != nil {
		bad(at("log", "level"), "log.level: %v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad(at("log", "format"), "log.format %q: want text or json", c.Log.Format)
	}
	return errors.Join(errs...)
}

func at(path ...any) []any { return path }

func checkHostPort(addr string) error {
	if addr == "" {
		return errors.New("must not be empty")
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%q: want host:port", addr)
	}
	return nil
}

// SlogLevel maps log.level to a slog level.
func (l Log) SlogLevel() (slog.Level, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(l.Level)); err != nil {
		return 0, fmt.Errorf("%q: want debug, info, warn or error", l.Level)
	}
	return lvl, nil
}
