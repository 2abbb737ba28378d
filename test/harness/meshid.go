package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/meshid/meshid/internal/atomicfile"
)

// MeshidOptions configures StartMeshid. Zero values get the defaults noted.
type MeshidOptions struct {
	// Name of the process and of its directory in Env.Dir; default "meshid".
	Name string
	// TrustDomain; default DemoTrustDomain.
	TrustDomain string
	Entries     []Entry
	// PolicyDir holds the Rego policies; default <repo>/policies, or none
	// when Bundles are set.
	PolicyDir string
	// Bundles are authz.bundles (BundleServer.Source makes one).
	Bundles []MeshidBundle
	// X509TTL of issued SVIDs; zero leaves meshid's default.
	X509TTL time.Duration
	// AuthzHTTP also serves Envoy's HTTP ext_authz protocol
	// (authz.http_address) on a free port: Meshid.AuthzHTTPAddr.
	AuthzHTTP bool
	// AuthzTLSID serves both authz listeners over mutual TLS with an SVID
	// for this ID (authz.tls.spiffe_id): Meshid.AuthzTLSID.
	AuthzTLSID string
	// DecisionLog writes decisions to Meshid.DecisionLogPath
	// (authz.decision_log), keeping their policy revisions in data/ for
	// `meshid policy why` (Meshid.PolicyWhy).
	DecisionLog bool
	// ExplainDenials also gives each denial's line a reason
	// (authz.decision_log_explain: deny); it implies DecisionLog.
	ExplainDenials bool
	// ExtraConfig is YAML appended verbatim to meshid.yaml, for sections the
	// harness does not write (federation, ca, ...). It must not repeat a
	// top-level key the harness writes.
	ExtraConfig string
	// NoFile, when set, is meshid's RLIMIT_NOFILE, soft and hard, as
	// `ulimit -n` sets it: a small one shows what a flood of connections
	// does to a daemon with few descriptors to spare.
	NoFile uint64
	// Unready makes StartMeshid and Restart return once meshid is alive
	// (/healthz answers) rather than ready, for a meshid expected to run
	// unready, such as one whose CA cannot rotate: see Meshid.Readyz.
	Unready bool

	host *Host // set by Host.StartMeshid
}

// Entry is one registration entry of entries.yaml.
type Entry struct {
	SPIFFEID      string   `yaml:"spiffe_id,omitempty"`
	Template      string   `yaml:"spiffe_id_template,omitempty"` // instead of SPIFFEID
	Selectors     []string `yaml:"selectors,omitempty"`
	FederatesWith []string `yaml:"federates_with,omitempty"`
	DNSNames      []string `yaml:"dns_names,omitempty"`
}

// Meshid is a running `meshid run`.
type Meshid struct {
	*Process
	TrustDomain string
	SocketPath  string // meshid's Unix socket: Workload API, SDS, health
	// AuthzAddr and AdminAddr are on 127.0.0.1, or on the host's address
	// for a meshid started by Host.StartMeshid; so is AuthzHTTPAddr.
	AuthzAddr   string // ext_authz gRPC, "IP:PORT"
	AdminAddr   string // /healthz /readyz /metrics, "IP:PORT"
	Dir         string // holds meshid.yaml, entries.yaml, data/ and sock/
	ConfigPath  string
	EntriesPath string
	// AuthzHTTPAddr is Envoy's HTTP ext_authz protocol, "IP:PORT";
	// "" unless MeshidOptions.AuthzHTTP.
	AuthzHTTPAddr string
	// AuthzTLSID is meshid's own ID on its authz listeners, which then speak
	// only mutual TLS; "" unless MeshidOptions.AuthzTLSID.
	AuthzTLSID string
	// DecisionLogPath is the decision log file, in Dir; "" unless
	// MeshidOptions.DecisionLog.
	DecisionLogPath string

	env  *Env
	host *Host  // nil: the harness's own network namespace
	name string // ProcSpec name, reused by Restart
	// waitPath is the admin path StartMeshid and Restart wait for a 200 on.
	waitPath string
}

// meshidConfig is the subset of meshid.yaml the harness writes; see
// docs/operations.md § Configuration.
type meshidConfig struct {
	TrustDomain string `yaml:"trust_domain"`
	DataDir     string `yaml:"data_dir"`
	SocketPath  string `yaml:"socket_path"`
	EntriesFile string `yaml:"entries_file"`
	SVID        *struct {
		X509TTL string `yaml:"x509_ttl"`
	} `yaml:"svid,omitempty"`
	Authz struct {
		Address     string         `yaml:"address"`
		HTTPAddress string         `yaml:"http_address,omitempty"`
		PolicyDir   string         `yaml:"policy_dir,omitempty"`
		Bundles     []MeshidBundle `yaml:"bundles,omitempty"`
		DecisionLog string         `yaml:"decision_log,omitempty"`
		Explain     string         `yaml:"decision_log_explain,omitempty"`
		TLS         *struct {
			SPIFFEID string `yaml:"spiffe_id"`
		} `yaml:"tls,omitempty"`
	} `yaml:"authz"`
	Admin struct {
		Address string `yaml:"address"`
	} `yaml:"admin"`
	Log struct {
		Level  string `yaml:"level"`
		Format string `yaml:"format"`
	} `yaml:"log"`
}

// StartMeshid writes meshid.yaml and entries.yaml into Env.Dir/NAME and runs
// `meshid run -config meshid.yaml` as root. It returns once /readyz says 200
// (/healthz with MeshidOptions.Unready).
func (e *Env) StartMeshid(ctx context.Context, o MeshidOptions) (*Meshid, error) {
	bin, err := e.Binary("meshid")
	if err != nil {
		return nil, err
	}
	if o.Name == "" {
		o.Name = "meshid"
	}
	if o.TrustDomain == "" {
		o.TrustDomain = DemoTrustDomain
	}
	if o.PolicyDir == "" && len(o.Bundles) == 0 {
		o.PolicyDir = filepath.Join(e.Root, "policies")
	}
	dir, err := e.MkdirAll(o.Name)
	if err != nil {
		return nil, err
	}
	freeAddr := e.FreeAddr
	if o.host != nil {
		freeAddr = o.host.FreeAddr
	}
	m := &Meshid{
		TrustDomain: o.TrustDomain,
		SocketPath:  meshidSocketPath(dir),
		AuthzAddr:   freeAddr(),
		AdminAddr:   freeAddr(),
		Dir:         dir,
		ConfigPath:  filepath.Join(dir, "meshid.yaml"),
		EntriesPath: filepath.Join(dir, "entries.yaml"),
		env:         e,
		host:        o.host,
		name:        o.Name,
		waitPath:    "/readyz",
	}
	if o.Unready {
		m.waitPath = "/healthz"
	}
	if n := len(m.SocketPath); n > 100 {
		return nil, fmt.Errorf("harness: socket path %s is %d bytes, too long for a Unix socket; use a shorter TMPDIR", m.SocketPath, n)
	}

	var c meshidConfig
	c.TrustDomain = o.TrustDomain
	c.DataDir = filepath.Join(dir, "data")
	c.SocketPath = m.SocketPath
	c.EntriesFile = m.EntriesPath
	if o.X509TTL != 0 {
		c.SVID = &struct {
			X509TTL string `yaml:"x509_ttl"`
		}{o.X509TTL.String()}
	}
	c.Authz.Address = m.AuthzAddr
	if o.AuthzHTTP {
		m.AuthzHTTPAddr = freeAddr()
		c.Authz.HTTPAddress = m.AuthzHTTPAddr
	}
	if o.AuthzTLSID != "" {
		m.AuthzTLSID = o.AuthzTLSID
		c.Authz.TLS = &struct {
			SPIFFEID string `yaml:"spiffe_id"`
		}{o.AuthzTLSID}
	}
	c.Authz.PolicyDir = o.PolicyDir
	c.Authz.Bundles = o.Bundles
	if o.DecisionLog || o.ExplainDenials {
		m.DecisionLogPath = filepath.Join(dir, "decisions.jsonl")
		c.Authz.DecisionLog = m.DecisionLogPath
	}
	if o.ExplainDenials {
		c.Authz.Explain = "deny"
	}
	c.Admin.Address = m.AdminAddr
	c.Log.Level, c.Log.Format = "debug", "text"
	config, err := yaml.Marshal(c)
	if err != nil {
		return nil, err
	}
	if o.ExtraConfig != "" {
		config = append(config, "\n"+o.ExtraConfig+"\n"...)
	}
	if err := os.WriteFile(m.ConfigPath, config, 0o644); err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	if err := m.WriteEntries(o.Entries); err != nil {
		return nil, err
	}

	path, args := bin, []string{"run", "-config", m.ConfigPath}
	if o.NoFile > 0 {
		// The shell lowers both limits and becomes meshid (same pid), so
		// Restart, which reuses the command line, keeps the limit.
		args = append([]string{"-c", "ulimit -n " + strconv.FormatUint(o.NoFile, 10) + ` && exec "$0" "$@"`, bin}, args...)
		path = "/bin/sh"
	}
	m.Process, err = e.Start(ctx, ProcSpec{
		Name: o.Name,
		Path: path,
		Args: args,
		Dir:  dir,
		Host: o.host,
	})
	if err != nil {
		return nil, err
	}
	if err := e.waitReady(ctx, m.Process, "http://"+m.AdminAddr+m.waitPath, 200); err != nil {
		return nil, err
	}
	return m, nil
}

// meshidSocketPath is where a meshid whose files are in dir serves. meshid
// creates sock/ itself (0755) and the socket (0777); dir and those above it
// must pass its directory rules (root's, not writable by others unless
// sticky), as Env.Dir and Env.MkdirAll's 0755 directories under /tmp do.
func meshidSocketPath(dir string) string { return filepath.Join(dir, "sock", "agent.sock") }

// WriteEntries replaces entries.yaml (meshid hot-reloads it). The file is
// written atomically, so meshid never reads half of it.
func (m *Meshid) WriteEntries(entries []Entry) error {
	if entries == nil {
		entries = []Entry{}
	}
	b, err := yaml.Marshal(struct {
		Entries []Entry `yaml:"entries"`
	}{entries})
	if err != nil {
		return err
	}
	if err := atomicfile.Write(m.EntriesPath, b, 0o644); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return nil
}

// Restart stops meshid and starts it again on the same config, data
// directory and socket (say, to check that the CA survives a restart).
// The new process logs to a new file, NAME-2.log and so on.
func (m *Meshid) Restart(ctx context.Context) error {
	if err := m.Stop(10 * time.Second); err != nil {
		return err
	}
	p, err := m.env.Start(ctx, ProcSpec{
		Name: m.name,
		Path: m.cmd.Path,
		Args: m.cmd.Args[1:],
		Dir:  m.Dir,
		Host: m.host,
	})
	if err != nil {
		return err
	}
	m.Process = p
	return m.env.waitReady(ctx, p, "http://"+m.AdminAddr+m.waitPath, 200)
}
