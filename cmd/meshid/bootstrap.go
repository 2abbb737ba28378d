package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/internal/config"
)

// envoyBootstrap prints (or writes) the bootstrap of one meshid sidecar.
// flagNames rewrites the generator's errors, which name envoy.Sidecar's
// fields, in terms of this command's flags, so they say what to type.
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

func envoyBootstrap(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("envoy bootstrap", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprint(stderr, `Usage: meshid envoy bootstrap -spiffe-id ID [-inbound ADDR -app ADDR] [-outbound ADDR -peer ADDR -peer-id ID] [flags]

Prints an Envoy bootstrap for a sidecar that takes its certificate and trust
bundle from meshid over SDS. -inbound terminates mTLS from peers, asks meshid's
ext_authz and forwards to -app; -outbound takes plain HTTP from the app and
originates mTLS to -peer, which must present -peer-id. Addresses are IP:PORT.
With -authz-http, ext_authz uses Envoy's HTTP protocol and -authz is meshid's
authz.http_address; meshid then reads the caller from x-forwarded-client-cert
and needs authz.xfcc.trust: true. With -authz-tls-id, Envoy reaches meshid's
authz over mutual TLS and accepts only a server presenting that ID (meshid's
authz.tls.spiffe_id).

`)
		flags.PrintDefaults()
	}
	var (
		sc       envoy.Sidecar
		in       envoy.Inbound
		out      envoy.Outbound
		outFile  string
		trustDom string
	)
	flags.StringVar(&sc.SPIFFEID, "spiffe-id", "", "the identity this sidecar asks meshid for (required)")
	flags.StringVar(&trustDom, "trust-domain", "", "trust domain whose bundle validates peers (default: the -spiffe-id's)")
	flags.StringVar(&sc.SDSSocket, "socket", config.DefaultSocketPath, "meshid's socket_path")
	flags.StringVar(&sc.AdminAddr, "admin", "127.0.0.1:9901", "Envoy admin address")
	flags.StringVar(&sc.Node, "node", "", "Envoy node id (informational; default: the SPIFFE ID)")
	flags.StringVar(&in.ListenAddr, "inbound", "", "mTLS listener for peers")
	flags.StringVar(&in.AppAddr, "app", "", "the local app behind -inbound")
	flags.StringVar(&in.AuthzAddr, "authz", "127.0.0.1:9191", "meshid's authz.address, or its authz.http_address with -authz-http (IP:PORT or unix:///path)")
	flags.BoolVar(&in.AuthzHTTP, "authz-http", false, "ask meshid over Envoy's HTTP ext_authz protocol instead of gRPC")
	flags.Func("authz-body", "send meshid up to this many bytes of each request body, for input.parsed_body (default: none)", func(v string) error {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("want a positive number of bytes")
		}
		in.AuthzBodyBytes = uint32(n)
		return nil
	})
	flags.StringVar(&in.AuthzSPIFFEID, "authz-tls-id", "", "meshid's authz.tls.spiffe_id: reach the authz server over mTLS, accepting only this ID")
	flags.StringVar(&out.ListenAddr, "outbound", "", "plain HTTP listener for the local app")
	flags.StringVar(&out.PeerAddr, "peer", "", "the peer sidecar's inbound address")
	flags.StringVar(&out.PeerSPIFFEID, "peer-id", "", "the SPIFFE ID the peer must present")
	flags.BoolVar(&sc.DeltaSDS, "delta", false, "fetch secrets with incremental xDS (DELTA_GRPC) instead of state of the world")
	flags.StringVar(&outFile, "o", "", "write to this file instead of stdout")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("envoy bootstrap: unexpected argument %q", flags.Arg(0))
	}

	sc.TrustDomain = trustDom
	if id, err := spiffeid.FromString(sc.SPIFFEID); err == nil && sc.TrustDomain == "" {
		sc.TrustDomain = id.TrustDomain().Name()
	}
	if in.ListenAddr != "" || in.AppAddr != "" {
		sc.Inbound = &in
	} else if in.AuthzHTTP || in.AuthzSPIFFEID != "" || in.AuthzBodyBytes != 0 {
		return fmt.Errorf("envoy bootstrap: -authz-http, -authz-body and -authz-tls-id configure the inbound listener; add -inbound and -app")
	}
	if out.ListenAddr != "" || out.PeerAddr != "" || out.PeerSPIFFEID != "" {
		sc.Outbound = &out
	}
	config, err := sc.Render()
	if err != nil {
		return errors.New(flagNames.Replace(err.Error()))
	}
	if outFile == "" {
		_, err = stdout.Write(config)
		return err
	}
	return os.WriteFile(outFile, config, 0o644)
}
