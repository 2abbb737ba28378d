package harness

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/meshid/meshid/envoy"
)

// The demo mesh's identities and uids. Tests, docs/envoy.md and the shipped
// policy in policies/ all refer to these.
const (
	DemoTrustDomain = "example.org"
	FrontendID      = "spiffe://example.org/ns/demo/sa/frontend"
	BackendID       = "spiffe://example.org/ns/demo/sa/backend"

	// meshid attests the Envoys, so their uids are what entries select on.
	BackendEnvoyUID  = 1101
	FrontendEnvoyUID = 1102
	// The apps run under uids of their own that no entry selects: they hold
	// no identity, only their sidecars do.
	BackendAppUID  = 1201
	FrontendAppUID = 1202
)

// DemoEntries are the registration entries of the demo mesh: each Envoy gets
// its workload's identity by its uid.
func DemoEntries() []Entry {
	return []Entry{
		{SPIFFEID: BackendID, Selectors: []string{fmt.Sprintf("unix:uid:%d", BackendEnvoyUID)}},
		{SPIFFEID: FrontendID, Selectors: []string{fmt.Sprintf("unix:uid:%d", FrontendEnvoyUID)}},
	}
}

// DemoOptions configures StartDemoMesh.
type DemoOptions struct {
	// PolicyDir; default <repo>/policies, whose shipped policy lets the
	// frontend GET /hello on the backend and denies everything else.
	PolicyDir string
	// X509TTL of the Envoys' SVIDs; zero leaves meshid's default.
	X509TTL time.Duration
	// DeltaSDS makes both sidecars use incremental SDS (DELTA_GRPC).
	DeltaSDS bool
	// ValidationName is both sidecars' SDS name for their trust bundle;
	// empty means the trust domain ID (see envoy.Sidecar.ValidationName).
	ValidationName string
	// AuthzHTTP makes the backend sidecar ask meshid over Envoy's HTTP
	// ext_authz protocol, on Meshid.AuthzHTTPAddr, instead of gRPC.
	// StartDemoMesh turns on meshid's authz.http_address for it; a meshid
	// given to StartDemoWorkloads must have been started with
	// MeshidOptions.AuthzHTTP. That protocol carries no peer: policies see
	// the caller only with authz.xfcc.trust (Meshid.ConfigureAuthz).
	AuthzHTTP bool
	// AuthzTLSID makes StartDemoMesh's meshid serve authz over mutual TLS
	// with this ID (MeshidOptions.AuthzTLSID). Whatever starts meshid, the
	// backend sidecar reaches a meshid that does so over mTLS, accepting
	// only its ID.
	AuthzTLSID string
	// DecisionLog and ExplainDenials are StartDemoMesh's meshid's
	// MeshidOptions.DecisionLog and ExplainDenials.
	DecisionLog, ExplainDenials bool
	// BackendAppAddr, if set, is an app already serving there ("IP:PORT")
	// that the backend sidecar forwards to instead of a demoapp, for tests
	// that need to see what reached the backend. DemoMesh.BackendApp is
	// then nil.
	BackendAppAddr string
}

// DemoMesh is meshid plus two workloads, each behind its own Envoy:
//
//	frontend app ─http─▶ frontend Envoy ─mTLS─▶ backend Envoy ─http─▶ backend app
//	                        │ SDS                  │ SDS, ext_authz
//	                        └──────────▶ meshid ◀──┘
type DemoMesh struct {
	Meshid                  *Meshid
	Frontend, Backend       *Envoy // Frontend has only an outbound listener, Backend only an inbound one
	FrontendApp, BackendApp *App   // BackendApp is nil with DemoOptions.BackendAppAddr
	// FrontendURL is "http://<frontend app>/call/": append a backend path,
	// e.g. FrontendURL+"hello", to send a request across the mesh.
	FrontendURL string
	// Dir is the Env's directory, with every config and logs/.
	Dir string
}

// StartDemoMesh starts meshid with DemoEntries, then the workloads and their
// sidecars, and returns once every process is ready and both Envoys hold
// their certificates.
func (e *Env) StartDemoMesh(ctx context.Context, o DemoOptions) (*DemoMesh, error) {
	m, err := e.StartMeshid(ctx, MeshidOptions{
		TrustDomain: DemoTrustDomain,
		Entries:     DemoEntries(),
		PolicyDir:   o.PolicyDir,
		X509TTL:     o.X509TTL,
		AuthzHTTP:   o.AuthzHTTP,
		AuthzTLSID:  o.AuthzTLSID,
		DecisionLog: o.DecisionLog, ExplainDenials: o.ExplainDenials,
	})
	if err != nil {
		return nil, err
	}
	return e.StartDemoWorkloads(ctx, m, m, o)
}

// StartDemoWorkloads starts the demo's apps and sidecars. The frontend's
// sidecar takes its identity from front, the backend's its identity and
// authorization decisions from back: one meshid for both, or two nodes of
// one trust domain. DemoMesh.Meshid is back. Of o, only the sidecar
// settings apply (meshid is already running).
func (e *Env) StartDemoWorkloads(ctx context.Context, front, back *Meshid, o DemoOptions) (*DemoMesh, error) {
	d := &DemoMesh{Meshid: back, Dir: e.Dir}
	authzAddr := back.AuthzAddr
	if o.AuthzHTTP {
		if back.AuthzHTTPAddr == "" {
			return nil, fmt.Errorf("harness: DemoOptions.AuthzHTTP, but meshid %s serves no authz.http_address (MeshidOptions.AuthzHTTP)", back.Name)
		}
		authzAddr = back.AuthzHTTPAddr
	}
	appAddr := o.BackendAppAddr
	if appAddr == "" {
		app, err := e.StartApp(ctx, "backend", BackendAppUID, "")
		if err != nil {
			return nil, err
		}
		d.BackendApp, appAddr = app, app.Addr
	}
	var err error
	d.Backend, err = e.StartEnvoy(ctx, "backend-envoy", envoy.Sidecar{
		SDSSocket:      back.SocketPath,
		SPIFFEID:       BackendID,
		TrustDomain:    back.TrustDomain,
		DeltaSDS:       o.DeltaSDS,
		ValidationName: o.ValidationName,
		Inbound: &envoy.Inbound{
			ListenAddr: e.FreeAddr(),
			AppAddr:    appAddr,
			AuthzAddr:  authzAddr,
			AuthzHTTP:  o.AuthzHTTP,
			// meshid's authz listeners speak only mTLS when it has an ID.
			AuthzSPIFFEID: back.AuthzTLSID,
		},
	}, BackendEnvoyUID)
	if err != nil {
		return nil, err
	}
	d.Frontend, err = e.StartEnvoy(ctx, "frontend-envoy", envoy.Sidecar{
		SDSSocket:      front.SocketPath,
		SPIFFEID:       FrontendID,
		TrustDomain:    front.TrustDomain,
		DeltaSDS:       o.DeltaSDS,
		ValidationName: o.ValidationName,
		Outbound: &envoy.Outbound{
			ListenAddr:   e.FreeAddr(),
			PeerAddr:     d.Backend.Sidecar.Inbound.ListenAddr,
			PeerSPIFFEID: BackendID,
		},
	}, FrontendEnvoyUID)
	if err != nil {
		return nil, err
	}
	upstream := "http://" + d.Frontend.Sidecar.Outbound.ListenAddr
	if d.FrontendApp, err = e.StartApp(ctx, "frontend", FrontendAppUID, upstream); err != nil {
		return nil, err
	}
	for _, v := range []*Envoy{d.Backend, d.Frontend} {
		if err := v.WaitLive(ctx); err != nil {
			return nil, err
		}
	}
	d.FrontendURL = d.FrontendApp.URL + "/call/"
	return d, nil
}

// String describes the running mesh: every process with its address, uid
// and log, and a request to try. `make demo` prints it.
func (d *DemoMesh) String() string {
	var b strings.Builder
	row := func(name, addr string, uid int, p *Process) {
		fmt.Fprintf(&b, "  %-15s %-38s uid %-5d log %s\n", name, addr, uid, p.LogPath)
	}
	m := d.Meshid
	fmt.Fprintf(&b, "demo mesh (trust domain %s)\n", m.TrustDomain)
	row("frontend app", d.FrontendApp.URL, FrontendAppUID, d.FrontendApp.Process)
	row("frontend envoy", "outbound "+d.Frontend.Sidecar.Outbound.ListenAddr, FrontendEnvoyUID, d.Frontend.Process)
	row("backend envoy", "inbound "+d.Backend.Sidecar.Inbound.ListenAddr, BackendEnvoyUID, d.Backend.Process)
	if d.BackendApp != nil {
		row("backend app", d.BackendApp.URL, BackendAppUID, d.BackendApp.Process)
	} else {
		fmt.Fprintf(&b, "  %-15s %s (not started by the harness)\n", "backend app", d.Backend.Sidecar.Inbound.AppAddr)
	}
	row("meshid", "authz "+m.AuthzAddr, 0, m.Process)
	if m.AuthzHTTPAddr != "" {
		fmt.Fprintf(&b, "  meshid HTTP ext_authz %s\n", m.AuthzHTTPAddr)
	}
	fmt.Fprintf(&b, "  meshid socket %s, admin http://%s/readyz\n", m.SocketPath, m.AdminAddr)
	fmt.Fprintf(&b, "  envoy admin: frontend %s, backend %s\n", d.Frontend.AdminURL, d.Backend.AdminURL)
	fmt.Fprintf(&b, "try:\n  curl %shello   # allowed by policy: 200 from the backend\n  curl %sadmin   # denied by policy: 403\n", d.FrontendURL, d.FrontendURL)
	fmt.Fprintf(&b, "configs and logs: %s\n", d.Dir)
	return b.String()
}
