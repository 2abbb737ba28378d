package harness

import (
	"context"
	"fmt"
	"strings"

	"github.com/meshid/meshid/envoy"
)

// ChainService is one service of a chain mesh: an app behind its own Envoy,
// on a host, taking its identity and authorization decisions from a meshid.
type ChainService struct {
	Name     string // "web": names the processes ("web-app", "web-envoy")
	SPIFFEID string // the Envoy's identity; an entry of Meshid must give it
	// EnvoyUID is what that entry selects on; AppUID is the app's, which no
	// entry should select.
	EnvoyUID, AppUID uint32
	// Host is where the app and its Envoy run; nil is the harness's own
	// network namespace. Meshid must be reachable from there: on the same
	// host, its Unix socket and authz address are.
	Host   *Host
	Meshid *Meshid
}

// Chain is a running chain mesh, each service calling the next:
//
//	web app ─▶ web Envoy ─mTLS─▶ api Envoy ─▶ api app ─▶ api Envoy ─mTLS─▶ db Envoy ─▶ db app
//
// The first service's Envoy has only an outbound listener, the last one's
// only an inbound one, the others both; every inbound listener asks its
// service's meshid (ext_authz) before passing a request on.
type Chain struct {
	Services []ChainService
	Apps     []*App
	Envoys   []*Envoy
}

// StartChain starts the apps and Envoys of services, the last first so that
// every Envoy's peer exists, and returns once every Envoy is live.
func (e *Env) StartChain(ctx context.Context, services []ChainService) (*Chain, error) {
	if len(services) < 2 {
		return nil, fmt.Errorf("harness: a chain needs 2 services or more, got %d", len(services))
	}
	c := &Chain{
		Services: services,
		Apps:     make([]*App, len(services)),
		Envoys:   make([]*Envoy, len(services)),
	}
	last := len(services) - 1
	for i := last; i >= 0; i-- {
		s := services[i]
		freeAddr := e.FreeAddr
		if s.Host != nil {
			freeAddr = s.Host.FreeAddr
		}
		sc := envoy.Sidecar{
			SDSSocket:   s.Meshid.SocketPath,
			SPIFFEID:    s.SPIFFEID,
			TrustDomain: s.Meshid.TrustDomain,
		}
		if i < last {
			next := services[i+1]
			sc.Outbound = &envoy.Outbound{
				ListenAddr:   freeAddr(),
				PeerAddr:     c.Envoys[i+1].Sidecar.Inbound.ListenAddr,
				PeerSPIFFEID: next.SPIFFEID,
			}
		}
		// The app's upstream is its own Envoy's outbound listener; the last
		// app is a backend that echoes who called it.
		upstream := ""
		if sc.Outbound != nil {
			upstream = "http://" + sc.Outbound.ListenAddr
		}
		app, err := e.startApp(ctx, s.Host, s.Name+"-app", s.AppUID, upstream)
		if err != nil {
			return nil, err
		}
		c.Apps[i] = app
		if i > 0 {
			sc.Inbound = &envoy.Inbound{
				ListenAddr: freeAddr(),
				AppAddr:    app.Addr,
				AuthzAddr:  s.Meshid.AuthzAddr,
			}
		}
		v, err := e.startEnvoy(ctx, s.Host, s.Name+"-envoy", sc, s.EnvoyUID, nil)
		if err != nil {
			return nil, err
		}
		c.Envoys[i] = v
	}
	for _, v := range c.Envoys {
		if err := v.WaitLive(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// URL is the request from the first app to path on service i (i ≥ 1):
// each app on the way forwards "/call/REST" to its upstream as "/REST".
func (c *Chain) URL(i int, path string) string {
	return c.Apps[0].URL + strings.Repeat("/call", i) + "/" + strings.TrimPrefix(path, "/")
}
