// Package envoy owns the Envoy bootstrap configurations of meshid sidecars:
// one embedded template and the small struct it is rendered from.
//
// It never talks to Envoy at runtime. Everything a sidecar needs afterwards
// (its certificate, its trust bundle, every authorization decision) comes
// from meshid over SDS and ext_authz, so a bootstrap only says where meshid
// is and which names to ask it for.
package envoy

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

//go:embed templates/sidecar.yaml.tmpl
var templates embed.FS

var sidecarTemplate = template.Must(template.New("sidecar.yaml.tmpl").
	Funcs(template.FuncMap{"q": quote}).
	ParseFS(templates, "templates/sidecar.yaml.tmpl"))

// Sidecar describes one Envoy sidecar next to one workload.
type Sidecar struct {
	// Node is Envoy's node id and cluster name. It is informational only:
	// meshid identifies a sidecar by the kernel's view of its socket peer and
	// never trusts it. Empty means SPIFFEID.
	Node string
	// AdminAddr is Envoy's admin listener, "127.0.0.1:PORT".
	AdminAddr string
	// SDSSocket is the absolute path of meshid's Unix socket.
	SDSSocket string
	// SPIFFEID is the identity this sidecar asks meshid for; it is the SDS
	// resource name of its certificate.
	SPIFFEID string
	// TrustDomain whose bundle validates peers, e.g. "example.org"; the SDS
	// resource name of the validation context is "spiffe://example.org".
	TrustDomain string
	// Inbound, if set, accepts mTLS from peer sidecars for the local app.
	Inbound *Inbound
	// Outbound, if set, carries the local app's plain HTTP to one peer.
	Outbound *Outbound
	// ValidationName is the SDS name of the validation context. Empty means
	// "spiffe://<TrustDomain>"; "ROOTCA" and "ALL" (the SPIFFE certificate
	// validator with every bundle) are the SPIRE agent's aliases.
	ValidationName string
	// DeltaSDS makes Envoy fetch secrets with incremental xDS (api_type
	// DELTA_GRPC) instead of state of the world (GRPC, as for the SPIRE
	// agent). meshid serves both.
	DeltaSDS bool
}

// Inbound is the server side: mTLS in, ext_authz, then the local app.
type Inbound struct {
	ListenAddr string // where peer sidecars connect, "IP:PORT"
	AppAddr    string // the local app, "IP:PORT"
	AuthzAddr  string // meshid's ext_authz, "IP:PORT" or "unix:///path"
	// AuthzHTTP makes ext_authz speak Envoy's HTTP protocol (http_service)
	// instead of gRPC: AuthzAddr is then meshid's authz.http_address, not
	// authz.address. That protocol carries no peer, so meshid learns the
	// caller only from the x-forwarded-client-cert header this listener
	// sets, and only with authz.xfcc.trust.
	AuthzHTTP bool
	// AuthzBodyBytes, if not zero, sends meshid up to this many bytes of
	// each request's body, for policies that read input.parsed_body; a
	// longer body arrives cut and marked truncated.
	AuthzBodyBytes uint32
	// AuthzSPIFFEID is meshid's authz.tls.spiffe_id. When set, Envoy
	// reaches the authz server over mutual TLS: it presents this sidecar's
	// own SVID and accepts only a server presenting this ID, so a remote
	// meshid can be asked safely.
	AuthzSPIFFEID string
}

// Outbound is the client side: plain HTTP from the local app, mTLS to a peer
// sidecar that must present PeerSPIFFEID.
type Outbound struct {
	ListenAddr   string // where the local app sends requests, "IP:PORT"
	PeerAddr     string // the peer sidecar's inbound listener, "IP:PORT"
	PeerSPIFFEID string // the only identity the peer may present
}

// Render validates s and returns its Envoy bootstrap as YAML. The error
// names every missing or malformed field, not just the first.
func (s Sidecar) Render() ([]byte, error) {
	v, err := s.view()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := sidecarTemplate.Execute(&buf, v); err != nil {
		return nil, fmt.Errorf("envoy: render sidecar bootstrap: %w", err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

// view is what the template sees: the same facts, already validated and
// split into the pieces Envoy's API wants.
type view struct {
	Node, SDSSocket, SPIFFEID, ValidationName string
	SDSAPIType                                string // GRPC or DELTA_GRPC
	Admin                                     address
	Inbound                                   *inboundView
	Outbound                                  *outboundView
}

type inboundView struct {
	Listen, App, Authz address
	AuthzHTTP          bool
	// AuthzURI is http_service.server_uri.uri. Envoy requires one but sends
	// the request to the cluster, with the original request's Host.
	AuthzURI string
	// AuthzTLS, if set, is the mutual TLS to meshid's authz listener.
	AuthzTLS       *upstreamTLS
	AuthzBodyBytes uint32
}

// upstreamTLS is an upstream mTLS context: the sidecar's own certificate
// and bundle from SDS, and the one SPIFFE ID the server may present.
type upstreamTLS struct {
	Sidecar *view // for the SDS names and API type
	PeerID  string
}

type outboundView struct {
	Listen, Peer address
	TLS          upstreamTLS
}

// address is either a TCP socket (Host, Port) or a Unix socket (Pipe).
type address struct {
	Host string
	Port uint16
	Pipe string
}

func (s Sidecar) view() (view, error) {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("Sidecar.%s %s", field, fmt.Sprintf(format, args...)))
	}
	v := view{Node: s.Node, SDSSocket: s.SDSSocket, SPIFFEID: s.SPIFFEID, SDSAPIType: "GRPC"}
	if s.DeltaSDS {
		v.SDSAPIType = "DELTA_GRPC"
	}

	v.Admin = tcpAddress("AdminAddr", s.AdminAddr, fail)
	switch {
	case s.SDSSocket == "":
		fail("SDSSocket", "is required")
	case !filepath.IsAbs(s.SDSSocket):
		fail("SDSSocket", "%q must be an absolute path", s.SDSSocket)
	}
	spiffeID("SPIFFEID", s.SPIFFEID, fail)
	if v.Node == "" {
		v.Node = s.SPIFFEID
	}
	if s.TrustDomain == "" {
		fail("TrustDomain", "is required")
	} else if td, err := spiffeid.TrustDomainFromString(s.TrustDomain); err != nil {
		fail("TrustDomain", "%q: %v", s.TrustDomain, err)
	} else {
		v.ValidationName = td.IDString()
	}
	switch name := s.ValidationName; name {
	case "":
	case "ALL", "ROOTCA":
		v.ValidationName = name
	default:
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil || !strings.HasPrefix(name, "spiffe://") {
			fail("ValidationName", "%q: want ALL, ROOTCA or a trust domain ID such as spiffe://example.org", name)
		}
		v.ValidationName = td.IDString()
	}
	if s.Inbound == nil && s.Outbound == nil {
		fail("Inbound", "and Sidecar.Outbound are both nil; a sidecar needs at least one")
	}
	if in := s.Inbound; in != nil {
		v.Inbound = &inboundView{
			Listen: tcpAddress("Inbound.ListenAddr", in.ListenAddr, fail),
			App:    tcpAddress("Inbound.AppAddr", in.AppAddr, fail),
		}
		if path, ok := strings.CutPrefix(in.AuthzAddr, "unix://"); ok {
			if !filepath.IsAbs(path) {
				fail("Inbound.AuthzAddr", "%q must name an absolute socket path", in.AuthzAddr)
			}
			v.Inbound.Authz = address{Pipe: path}
		} else {
			v.Inbound.Authz = tcpAddress("Inbound.AuthzAddr", in.AuthzAddr, fail)
		}
		v.Inbound.AuthzBodyBytes = in.AuthzBodyBytes
		if in.AuthzSPIFFEID != "" {
			spiffeID("Inbound.AuthzSPIFFEID", in.AuthzSPIFFEID, fail)
			v.Inbound.AuthzTLS = &upstreamTLS{Sidecar: &v, PeerID: in.AuthzSPIFFEID}
		}
		if in.AuthzHTTP {
			v.Inbound.AuthzHTTP = true
			v.Inbound.AuthzURI = "http://meshid-authz"
			if a := v.Inbound.Authz; a.Pipe == "" && a.Host != "" {
				v.Inbound.AuthzURI = "http://" + net.JoinHostPort(a.Host, strconv.Itoa(int(a.Port)))
			}
		}
	}
	if out := s.Outbound; out != nil {
		v.Outbound = &outboundView{
			Listen: tcpAddress("Outbound.ListenAddr", out.ListenAddr, fail),
			Peer:   tcpAddress("Outbound.PeerAddr", out.PeerAddr, fail),
			TLS:    upstreamTLS{Sidecar: &v, PeerID: out.PeerSPIFFEID},
		}
		spiffeID("Outbound.PeerSPIFFEID", out.PeerSPIFFEID, fail)
	}
	if len(errs) > 0 {
		return view{}, fmt.Errorf("envoy: invalid sidecar: %w", errors.Join(errs...))
	}
	return v, nil
}

// tcpAddress parses "IP:PORT". Envoy's STATIC clusters and listeners do not
// resolve names, so a host name is an error here rather than at Envoy start.
func tcpAddress(field, s string, fail func(field, format string, args ...any)) address {
	if s == "" {
		fail(field, "is required")
		return address{}
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		fail(field, "%q is not IP:PORT: %v", s, err)
		return address{}
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		fail(field, "%q: host must be an IP address (Envoy STATIC clusters do not resolve names)", s)
		return address{}
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		fail(field, "%q: port must be 1-65535", s)
		return address{}
	}
	return address{Host: ip.String(), Port: uint16(p)}
}

func spiffeID(field, s string, fail func(field, format string, args ...any)) {
	if s == "" {
		fail(field, "is required")
		return
	}
	if _, err := spiffeid.FromString(s); err != nil {
		fail(field, "%q is not a SPIFFE ID: %v", s, err)
	}
}

// quote renders s as a double-quoted YAML scalar. JSON string syntax is a
// subset of YAML's double-quoted style, and it escapes everything that could
// end the scalar early.
func quote(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	return string(b)
}
