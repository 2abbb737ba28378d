package main

import (
	"errors"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/internal/endpoint"
)

// flagNames rewrites the generator's errors, which name envoy.Sidecar's
// fields, in terms of envoy bootstrap's flags, so they say what to type.
var flagNames = strings.NewReplacer(
	"envoy: invalid sidecar: ", "envoy bootstrap: ",
	"Sidecar.Inbound and Sidecar.Outbound are both nil; a sidecar needs at least one", "neither -inbound nor -outbound is set; a sidecar needs at least one",
	"Sidecar.Inbound.AuthzSPIFFEID", "-authz-tls-id",
	"Sidecar.Inbound.AuthzAddr", "-authz",
	"Sidecar.Inbound.AppAddr", "-app",
	"Sidecar.Inbound.ListenAddr", "-inbound",
	"Sidecar.Outbound.ListenAddr", "-outbound",
	"Sidecar.Outbound.PeerAddr", "-peer",
	"Sidecar.Outbound.PeerSPIFFEID", "-peer-id",
	"Sidecar.Upstream", "-upstream",
	"Sidecar.ValidationName", "-validation",
	"Sidecar.DNS", "-dns",
	"Sidecar.AdminAddr", "-admin",
	"Sidecar.SDSSocket", "-socket",
	"Sidecar.SPIFFEID", "-spiffe-id",
	"Sidecar.TrustDomain", "-trust-domain",
)

// newEnvoyBootstrapCmd prints (or writes) the bootstrap of one meshid
// sidecar.
func newEnvoyBootstrapCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bootstrap --spiffe-id ID [--inbound ADDR --app ADDR] [--outbound ADDR (--upstream NAME=ID@HOST:PORT ... | --peer ADDR --peer-id ID)]",
		Short: "Print an Envoy sidecar bootstrap that uses meshid",
		Long: `Print an Envoy bootstrap for a sidecar that takes its certificate and trust
bundle from meshid over SDS. --inbound terminates mTLS from peers, asks
meshid's ext_authz and forwards to --app; --outbound takes plain HTTP from
the app and originates mTLS to the peer the request's host names: each
--upstream NAME=SPIFFE_ID@HOST:PORT (repeatable) is the peer sidecar the
app reaches as http://NAME/ (Host header, or an HTTP proxy setting
pointing at --outbound), which must present SPIFFE_ID; --peer with
--peer-id is the peer for every other host. Listeners (--inbound,
--outbound, --admin) are IP:PORT; the app, meshid's authz and peers may be
HOST:PORT, a host name Envoy resolves (--dns strict: every address, the
default; logical: the first). --validation names the trust bundle asked
of meshid: a trust domain ID (default: spiffe://<trust domain>), ROOTCA
(the sidecar's own) or ALL (every bundle it may use, with the SPIFFE
certificate validator). --socket is meshid's socket_path, as a path or a
unix:// URI. With --authz-http, ext_authz uses Envoy's HTTP protocol and
--authz is meshid's authz.http_address; meshid then reads the caller from
x-forwarded-client-cert and needs authz.xfcc.trust: true. With
--authz-tls-id, Envoy reaches meshid's authz over mutual TLS and accepts
only a server presenting that ID (meshid's authz.tls.spiffe_id).`,
		Example: `  # the backend's sidecar: mTLS in on 8443, ext_authz, the app on 8080
  meshid envoy bootstrap --spiffe-id spiffe://example.org/ns/demo/sa/backend \
      --inbound 127.0.0.1:8443 --app 127.0.0.1:8080 -o backend-envoy.yaml

  # the frontend's sidecar: plain HTTP in on 15001, mTLS out to the backend
  meshid envoy bootstrap --spiffe-id spiffe://example.org/ns/demo/sa/frontend \
      --outbound 127.0.0.1:15001 --peer 127.0.0.1:8443 \
      --peer-id spiffe://example.org/ns/demo/sa/backend

  # a compose service's sidecar: in from peers, out to api and db by name
  meshid envoy bootstrap --spiffe-id spiffe://example.org/compose/web \
      --inbound 0.0.0.0:8443 --app 127.0.0.1:8080 --authz meshid:9191 \
      --outbound 127.0.0.1:15001 \
      --upstream api=spiffe://example.org/compose/api@api:8443 \
      --upstream db=spiffe://example.org/compose/db@db:8443`,
		Args:              cli.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	var (
		sc       envoy.Sidecar
		in       envoy.Inbound
		out      envoy.Outbound
		socket   string
		outFile  string
		trustDom string
	)
	flags := cmd.Flags()
	flags.StringVar(&sc.SPIFFEID, "spiffe-id", "", "the identity this sidecar asks meshid for (required)")
	flags.StringVar(&trustDom, "trust-domain", "", "trust domain whose bundle validates peers (default: the --spiffe-id's)")
	cli.SocketFlag(cmd, &socket, config.DefaultSocketPath, "meshid's socket_path, /PATH or unix:///PATH")
	flags.StringVar(&sc.AdminAddr, "admin", "127.0.0.1:9901", "Envoy admin address")
	flags.StringVar(&sc.Node, "node", "", "Envoy node id (informational; default: the SPIFFE ID)")
	flags.StringVar(&in.ListenAddr, "inbound", "", "mTLS listener for peers")
	flags.StringVar(&in.AppAddr, "app", "", "the local app behind --inbound")
	flags.StringVar(&in.AuthzAddr, "authz", "127.0.0.1:9191", "meshid's authz.address, or its authz.http_address with --authz-http (IP:PORT or unix:///path)")
	flags.BoolVar(&in.AuthzHTTP, "authz-http", false, "ask meshid over Envoy's HTTP ext_authz protocol instead of gRPC")
	flags.Func("authz-body", "send meshid up to this many `bytes` of each request body, for input.parsed_body (default: none)", func(v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return errors.New("want a positive number of bytes")
		}
		in.AuthzBodyBytes = uint32(n)
		return nil
	})
	flags.StringVar(&in.AuthzSPIFFEID, "authz-tls-id", "", "meshid's authz.tls.spiffe_id: reach the authz server over mTLS, accepting only this ID")
	flags.StringVar(&out.ListenAddr, "outbound", "", "plain HTTP listener for the local app")
	flags.StringVar(&out.PeerAddr, "peer", "", "the peer sidecar's inbound address")
	flags.StringVar(&out.PeerSPIFFEID, "peer-id", "", "the SPIFFE ID the peer must present")
	flags.Func("upstream", "a peer sidecar the app calls by `NAME=SPIFFE_ID@HOST:PORT`: requests for host NAME go to HOST:PORT, which must present SPIFFE_ID (repeatable)", func(v string) error {
		u, err := parseUpstream(v)
		if err != nil {
			return err
		}
		out.Upstreams = append(out.Upstreams, u)
		return nil
	})
	flags.StringVar(&sc.ValidationName, "validation", "", "the trust bundle's SDS `name`: spiffe://TRUST_DOMAIN, ROOTCA or ALL (default: spiffe://<trust domain>)")
	flags.Func("dns", "how peers, the app and authz given by host name are resolved: `strict` (every address; the default) or logical (the first)", func(v string) error {
		switch t := envoy.DNSType(v); t {
		case envoy.DNSStrict, envoy.DNSLogical:
			sc.DNS = t
			return nil
		}
		return errors.New("want strict or logical")
	})
	flags.BoolVar(&sc.DeltaSDS, "delta", false, "fetch secrets with incremental xDS (DELTA_GRPC) instead of state of the world")
	flags.StringVarP(&outFile, "output", "o", "", "write to this `file` instead of stdout")

	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		// Envoy dials a path; the flag takes the URI form of the other
		// commands too. A bad value is reported with whatever else is
		// wrong, so that one run names every problem.
		var socketErr error
		sc.SDSSocket = config.DefaultSocketPath
		if e, err := endpoint.Parse(socket, endpoint.FromFlag); err != nil {
			socketErr = err
		} else {
			sc.SDSSocket = e.Path()
		}
		sc.TrustDomain = trustDom
		if id, err := spiffeid.FromString(sc.SPIFFEID); err == nil && sc.TrustDomain == "" {
			sc.TrustDomain = id.TrustDomain().Name()
		}
		if in.ListenAddr != "" || in.AppAddr != "" {
			sc.Inbound = &in
		} else if in.AuthzHTTP || in.AuthzSPIFFEID != "" || in.AuthzBodyBytes != 0 {
			return errors.New("envoy bootstrap: -authz-http, -authz-body and -authz-tls-id configure the inbound listener; add -inbound and -app")
		}
		if out.ListenAddr != "" || out.PeerAddr != "" || out.PeerSPIFFEID != "" || len(out.Upstreams) > 0 {
			sc.Outbound = &out
		}
		bootstrap, err := sc.Render()
		if err != nil {
			err = errors.New(flagNames.Replace(err.Error()))
		}
		if err := errors.Join(socketErr, err); err != nil {
			return err
		}
		if outFile == "" {
			_, err = cmd.OutOrStdout().Write(bootstrap)
			return err
		}
		return os.WriteFile(outFile, bootstrap, 0o644)
	}
	return cmd
}

// parseUpstream splits NAME=SPIFFE_ID@HOST:PORT; Render checks each part.
// A SPIFFE ID holds no '@', so the last one ends it.
func parseUpstream(v string) (envoy.Upstream, error) {
	name, rest, ok := strings.Cut(v, "=")
	at := strings.LastIndexByte(rest, '@')
	if !ok || at < 0 || name == "" || at == 0 || at == len(rest)-1 {
		return envoy.Upstream{}, errors.New("want NAME=SPIFFE_ID@HOST:PORT, e.g. api=spiffe://example.org/compose/api@api:8443")
	}
	return envoy.Upstream{Name: name, SPIFFEID: rest[:at], Addr: rest[at+1:]}, nil
}
