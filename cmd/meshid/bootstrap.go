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
	"Sidecar.AdminAddr", "-admin",
	"Sidecar.SDSSocket", "-socket",
	"Sidecar.SPIFFEID", "-spiffe-id",
	"Sidecar.TrustDomain", "-trust-domain",
)

// newEnvoyBootstrapCmd prints (or writes) the bootstrap of one meshid
// sidecar.
func newEnvoyBootstrapCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bootstrap --spiffe-id ID [--inbound ADDR --app ADDR] [--outbound ADDR --peer ADDR --peer-id ID]",
		Short: "Print an Envoy sidecar bootstrap that uses meshid",
		Long: `Print an Envoy bootstrap for a sidecar that takes its certificate and trust
bundle from meshid over SDS. --inbound terminates mTLS from peers, asks
meshid's ext_authz and forwards to --app; --outbound takes plain HTTP from
the app and originates mTLS to --peer, which must present --peer-id.
Addresses are IP:PORT. --socket is meshid's socket_path, as a path or a
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
      --peer-id spiffe://example.org/ns/demo/sa/backend`,
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
		if out.ListenAddr != "" || out.PeerAddr != "" || out.PeerSPIFFEID != "" {
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
