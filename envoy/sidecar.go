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
	// DNS is how a cluster whose address is a host name resolves it:
	// DNSStrict (the default) or DNSLogical. Clusters on IP addresses are
	// STATIC whatever it says.
	DNS DNSType
}

// DNSType is the Envoy cluster type of an upstream addressed by name.
type DNSType string

const (
	// DNSStrict (STRICT_DNS) balances over every address the name has, as
	// a compose service or a headless Kubernetes service with replicas.
	DNSStrict DNSType = "strict"
	// DNSLogical (LOGICAL_DNS) connects to the first address of the latest
	// answer: a large service behind DNS round-robin.
	DNSLogical DNSType = "logical"
)

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

// Outbound is the client side: plain HTTP from the local app, mTLS to peer
// sidecars, each of which must present its own SPIFFE ID. A request goes to
// the Upstream whose Name is its Host (any port), or else to the one peer
// PeerAddr, if set.
type Outbound struct {
	ListenAddr   string // where the local app sends requests, "IP:PORT"
	PeerAddr     string // the peer sidecar's inbound listener, "HOST:PORT"
	PeerSPIFFEID string // the only identity the peer may present
	Upstreams    []Upstream
}

// Upstream is one named peer sidecar.
type Upstream struct {
	// Name is the host the app calls it by (Host header or, through an
	// HTTP proxy setting, the URL's host), e.g. "api"; one per Outbound.
	Name string
	// SPIFFEID is the only identity the peer may present.
	SPIFFEID string
	// Addr is the peer sidecar's inbound listener, "HOST:PORT": an IP, or
	// a host name resolved by Envoy (see Sidecar.DNS).
	Addr string
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
	dns                                       string // the cluster type of a name
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
	Listen address
	// Peers are the upstream clusters: the named ones, then the one for
	// every other host (Domain "*"), if any.
	Peers []peerView
}

// peerView is one upstream peer sidecar: a virtual host of the outbound
// route and the cluster it routes to.
type peerView struct {
	Cluster, Domain string
	Addr            address
	TLS             upstreamTLS
}

// address is either a TCP socket (Host, Port) or a Unix socket (Pipe).
// ClusterType is set where it is a cluster's endpoint: STATIC for an IP
// or a pipe, STRICT_DNS or LOGICAL_DNS for a name.
type address struct {
	Host        string
	Port        uint16
	Pipe        string
	ClusterType string
}

func (s Sidecar) view() (view, error) {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("Sidecar.%s %s", field, fmt.Sprintf(format, args...)))
	}
	v := view{Node: s.Node, SDSSocket: s.SDSSocket, SPIFFEID: s.SPIFFEID, SDSAPIType: "GRPC", dns: "STRICT_DNS"}
	if s.DeltaSDS {
		v.SDSAPIType = "DELTA_GRPC"
	}
	switch s.DNS {
	case "", DNSStrict:
	case DNSLogical:
		v.dns = "LOGICAL_DNS"
	default:
		fail("DNS", "%q: want %s or %s", s.DNS, DNSStrict, DNSLogical)
	}
	upstream := func(field, s string) address { return v.clusterAddress(field, s, fail) }

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
			App:    upstream("Inbound.AppAddr", in.AppAddr),
		}
		if path, ok := strings.CutPrefix(in.AuthzAddr, "unix://"); ok {
			if !filepath.IsAbs(path) {
				fail("Inbound.AuthzAddr", "%q must name an absolute socket path", in.AuthzAddr)
			}
			v.Inbound.Authz = address{Pipe: path, ClusterType: "STATIC"}
		} else {
			v.Inbound.Authz = upstream("Inbound.AuthzAddr", in.AuthzAddr)
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
		v.Outbound = &outboundView{Listen: tcpAddress("Outbound.ListenAddr", out.ListenAddr, fail)}
		names := map[string]bool{}
		for _, u := range out.Upstreams {
			field := fmt.Sprintf("Upstream %q", u.Name)
			switch err := checkHostname(u.Name); {
			case u.Name == "":
				fail("Upstream", "has no name (want NAME=SPIFFE_ID@HOST:PORT)")
			case err != nil:
				fail(field, "name: %v", err)
			case names[strings.ToLower(u.Name)]:
				fail(field, "is given twice: one name, one upstream")
			}
			names[strings.ToLower(u.Name)] = true
			spiffeID(field+" SPIFFE ID", u.SPIFFEID, fail)
			v.Outbound.Peers = append(v.Outbound.Peers, peerView{
				Cluster: "upstream_" + strings.ToLower(u.Name), Domain: strings.ToLower(u.Name),
				Addr: upstream(field+" address", u.Addr),
				TLS:  upstreamTLS{Sidecar: &v, PeerID: u.SPIFFEID},
			})
		}
		// The one peer for every other host; required when no upstream
		// is named, and then whole.
		if len(out.Upstreams) == 0 || out.PeerAddr != "" || out.PeerSPIFFEID != "" {
			v.Outbound.Peers = append(v.Outbound.Peers, peerView{
				Cluster: "peer", Domain: "*",
				Addr: upstream("Outbound.PeerAddr", out.PeerAddr),
				TLS:  upstreamTLS{Sidecar: &v, PeerID: out.PeerSPIFFEID},
			})
			spiffeID("Outbound.PeerSPIFFEID", out.PeerSPIFFEID, fail)
		}
	}
	if len(errs) > 0 {
		return view{}, fmt.Errorf("envoy: invalid sidecar: %w", errors.Join(errs...))
	}
	return v, nil
}

// tcpAddress parses "IP:PORT" for a listener: Envoy listens on addresses,
// it does not resolve names for them, so a host name is an error here
// rather than at Envoy start.
func tcpAddress(field, s string, fail func(field, format string, args ...any)) address {
	host, port, ok := splitHostPort(field, "IP:PORT", s, fail)
	if !ok {
		return address{}
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		fail(field, "%q: host must be an IP address (Envoy listens on addresses, not names)", s)
		return address{}
	}
	return address{Host: ip.String(), Port: port}
}

// clusterAddress parses "HOST:PORT" for a cluster's endpoint: an IP makes
// a STATIC cluster, a host name one of v's DNS type.
func (v *view) clusterAddress(field, s string, fail func(field, format string, args ...any)) address {
	host, port, ok := splitHostPort(field, "HOST:PORT", s, fail)
	if !ok {
		return address{}
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return address{Host: ip.String(), Port: port, ClusterType: "STATIC"}
	}
	if err := checkHostname(host); err != nil {
		fail(field, "%q: %v", s, err)
		return address{}
	}
	return address{Host: host, Port: port, ClusterType: v.dns}
}

func splitHostPort(field, want, s string, fail func(field, format string, args ...any)) (string, uint16, bool) {
	if s == "" {
		fail(field, "is required")
		return "", 0, false
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		fail(field, "%q is not %s: %v", s, want, err)
		return "", 0, false
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		fail(field, "%q: port must be 1-65535", s)
		return "", 0, false
	}
	return host, uint16(p), true
}

// checkHostname accepts a DNS name: dot-separated labels of letters,
// digits, '-' and '_' (compose service names hold underscores, and Docker's
// and Podman's DNS answer them), none empty, none longer than 63 bytes or
// starting or ending with '-', at most 253 bytes in all, and not all
// digits and dots (a mistyped IP address is not a name).
const hostChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"

func checkHostname(h string) error {
	switch {
	case h == "":
		return errors.New("empty host name")
	case len(h) > 253:
		return fmt.Errorf("host name of %d bytes (at most 253)", len(h))
	case strings.Trim(h, "0123456789.") == "":
		return fmt.Errorf("%q is neither an IP address nor a host name", h)
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		switch {
		case label == "":
			return fmt.Errorf("%q is not a host name: empty label", h)
		case len(label) > 63:
			return fmt.Errorf("%q is not a host name: label of %d bytes (at most 63)", h, len(label))
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("%q is not a host name: a label starts or ends with '-'", h)
		case strings.Trim(label, hostChars) != "":
			return fmt.Errorf("%q is not a host name: only letters, digits, '-' and '_' between dots", h)
		}
	}
	return nil
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
