package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshid/meshid/envoy"
)

// Envoy is a running Envoy sidecar.
type Envoy struct {
	*Process
	// Sidecar is what the bootstrap was rendered from (AdminAddr and Node
	// filled in).
	Sidecar    envoy.Sidecar
	ConfigPath string
	AdminURL   string // "http://IP:PORT"

	env *Env
}

// StartEnvoy renders sc into Env.Dir/NAME/envoy.yaml and runs Envoy on it
// under uid (0 = root). An empty sc.AdminAddr gets a free port and an empty
// sc.Node the name. It returns once the admin endpoint answers, which is
// before Envoy has its certificates: use WaitLive to wait for those.
func (e *Env) StartEnvoy(ctx context.Context, name string, sc envoy.Sidecar, uid uint32) (*Envoy, error) {
	return e.startEnvoy(ctx, nil, name, sc, uid, nil)
}

// StartEnvoy runs Envoy on the host as Env.StartEnvoy does; an empty
// sc.AdminAddr gets a port on the host's address.
func (h *Host) StartEnvoy(ctx context.Context, name string, sc envoy.Sidecar, uid uint32) (*Envoy, error) {
	return h.env.startEnvoy(ctx, h, name, sc, uid, nil)
}

// startEnvoy runs Envoy on host h (nil: the Env's loopback), the rendered
// bootstrap passed through edit when it is set.
func (e *Env) startEnvoy(ctx context.Context, h *Host, name string, sc envoy.Sidecar, uid uint32, edit func([]byte) []byte) (*Envoy, error) {
	bin, err := EnvoyPath()
	if err != nil {
		return nil, err
	}
	if uid != 0 {
		if err := reachableByOthers(bin); err != nil {
			return nil, fmt.Errorf("harness: envoy for uid %d: %w (set $MESHID_ENVOY to a world-readable copy)", uid, err)
		}
	}
	if sc.AdminAddr == "" {
		if h != nil {
			sc.AdminAddr = h.FreeAddr()
		} else {
			sc.AdminAddr = e.FreeAddr()
		}
	}
	if sc.Node == "" {
		sc.Node = name
	}
	config, err := sc.Render()
	if err != nil {
		return nil, fmt.Errorf("harness: envoy %s: %w", name, err)
	}
	if edit != nil {
		config = edit(config)
	}
	dir, err := e.MkdirAll(name)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(path, config, 0o644); err != nil {
		return nil, fmt.Errorf("harness: envoy %s: %w", name, err)
	}

	e.mu.Lock()
	e.baseIDs++
	// --base-id names Envoy's shared memory; unique across every Envoy of
	// every test binary on the machine, even with hot restart disabled.
	baseID := os.Getpid()*100 + e.baseIDs%100
	e.mu.Unlock()

	p, err := e.Start(ctx, ProcSpec{
		Name: name,
		Path: bin,
		Args: []string{
			"--disable-hot-restart",
			"--base-id", fmt.Sprint(baseID),
			"--concurrency", "1", // 2-core CI machines run several Envoys
			"-c", path,
			"-l", "info",
			"--log-format", "[%Y-%m-%d %T.%e][%l][%n] %v",
		},
		UID:  uid,
		Dir:  dir,
		Host: h,
	})
	if err != nil {
		return nil, err
	}
	v := &Envoy{Process: p, Sidecar: sc, ConfigPath: path, AdminURL: "http://" + sc.AdminAddr, env: e}
	// /server_info answers as soon as admin is up; /ready would wait for
	// certificates, and some tests need an Envoy that never gets one.
	if err := e.waitReady(ctx, p, v.AdminURL+"/server_info", 200); err != nil {
		return nil, err
	}
	return v, nil
}

// WaitLive waits until Envoy reports LIVE on /ready, which for a meshid
// sidecar means meshid has sent every certificate and bundle it asked for
// (the bootstrap disables SDS's initial fetch timeout, so Envoy never goes
// live without them).
func (v *Envoy) WaitLive(ctx context.Context) error {
	if err := v.env.waitReady(ctx, v.Process, v.AdminURL+"/ready", 200); err != nil {
		return fmt.Errorf("%w\nhint: /ready stays 503 until meshid has served every SDS secret; see meshid's log for why it did not", err)
	}
	return nil
}

// Admin sends GET to an admin path such as "/stats?filter=sds" and returns
// the body; any status but 200 is an error.
func (v *Envoy) Admin(ctx context.Context, path string) ([]byte, error) {
	status, body, err := Get(ctx, v.AdminURL+path)
	if err != nil {
		return nil, fmt.Errorf("harness: %s admin %s: %w", v.Name, path, err)
	}
	if status != 200 {
		return nil, fmt.Errorf("harness: %s admin %s: status %d: %s", v.Name, path, status, snippet(body))
	}
	return body, nil
}

// Cert is one certificate Envoy holds, from its admin /certs endpoint.
// Envoy 1.40 reports no issuer or subject, only what is here.
type Cert struct {
	// CA is true for a trust-bundle certificate (Envoy's "ca_cert"), false
	// for a certificate of Envoy's own chain ("cert_chain").
	CA bool
	// Path is where Envoy got it; "<inline>" for SDS-delivered secrets.
	Path string
	// SerialNumber is lower-case hex without leading zeros, as
	// fmt.Sprintf("%x", x509Cert.SerialNumber) prints it (Envoy pads it to
	// whole bytes: "0e70...").
	SerialNumber string
	URIs         []string
	DNSNames     []string
	IPAddresses  []string
	// DaysUntilExpiration is Envoy's whole-day countdown (0 for SVIDs that
	// live less than a day); ExpirationTime is exact.
	DaysUntilExpiration uint64
	ValidFrom           time.Time
	ExpirationTime      time.Time
}

// Certs returns every certificate of every TLS context in Envoy, in the
// order /certs lists them (a context's CA certificates before its chain).
// The same SVID appears once per TLS context that uses it.
func (v *Envoy) Certs(ctx context.Context) ([]Cert, error) {
	body, err := v.Admin(ctx, "/certs")
	if err != nil {
		return nil, err
	}
	return parseCerts(body)
}

// certsJSON is the shape of Envoy's /certs (envoy.admin.v3.Certificates in
// proto-JSON). Decoded by hand because importing the admin protos drags in
// dependencies the module does not otherwise need.
type certsJSON struct {
	Certificates []struct {
		CACert    []certDetailsJSON `json:"ca_cert"`
		CertChain []certDetailsJSON `json:"cert_chain"`
	} `json:"certificates"`
}

type certDetailsJSON struct {
	Path            string `json:"path"`
	SerialNumber    string `json:"serial_number"`
	SubjectAltNames []struct {
		URI       string `json:"uri"`
		DNS       string `json:"dns"`
		IPAddress string `json:"ip_address"`
	} `json:"subject_alt_names"`
	// proto-JSON writes uint64 as a string.
	DaysUntilExpiration uint64    `json:"days_until_expiration,string"`
	ValidFrom           time.Time `json:"valid_from"`
	ExpirationTime      time.Time `json:"expiration_time"`
}

func parseCerts(body []byte) ([]Cert, error) {
	var all certsJSON
	if err := json.Unmarshal(body, &all); err != nil {
		return nil, fmt.Errorf("harness: parse /certs: %w", err)
	}
	var certs []Cert
	add := func(ca bool, d certDetailsJSON) {
		c := Cert{
			CA:                  ca,
			Path:                d.Path,
			SerialNumber:        canonicalSerial(d.SerialNumber),
			DaysUntilExpiration: d.DaysUntilExpiration,
			ValidFrom:           d.ValidFrom,
			ExpirationTime:      d.ExpirationTime,
		}
		for _, san := range d.SubjectAltNames {
			switch {
			case san.URI != "":
				c.URIs = append(c.URIs, san.URI)
			case san.DNS != "":
				c.DNSNames = append(c.DNSNames, san.DNS)
			case san.IPAddress != "":
				c.IPAddresses = append(c.IPAddresses, san.IPAddress)
			}
		}
		certs = append(certs, c)
	}
	for _, tlsContext := range all.Certificates {
		for _, d := range tlsContext.CACert {
			add(true, d)
		}
		for _, d := range tlsContext.CertChain {
			add(false, d)
		}
	}
	return certs, nil
}

func canonicalSerial(hex string) string {
	if s := strings.TrimLeft(strings.ToLower(hex), "0"); s != "" {
		return s
	}
	return "0"
}
