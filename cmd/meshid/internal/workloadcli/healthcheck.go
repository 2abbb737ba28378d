package workloadcli

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/helper"
	"github.com/meshid/meshid/internal/endpoint"
)

// newHealthcheckCmd checks that meshid serves, that this process gets an
// SVID that is not past renewal, and optionally that an SVID file a helper
// keeps is fresh.
func newHealthcheckCmd(clock func() time.Time) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "healthcheck [--socket PATH] [--cert-file FILE] [--daemon-only]",
		Short: "Check meshid serves and this process's SVID rotates",
		Long: `Exit 0 when meshid answers gRPC health as SERVING, gives this process an
X509-SVID, and that SVID is not past 3/4 of its life (meshid renews at half,
so an older one means rotation has stalled). With --cert-file, the SVID in
FILE (say, the svid.pem that "meshid svid watch" keeps) must be fresh too.
Exit 1 and say which check failed otherwise.`,
		Example: `  meshid healthcheck
  meshid healthcheck --cert-file /run/svid/svid.pem
  meshid healthcheck --daemon-only --socket /run/meshid/agent.sock --json`,
		Args:              cli.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	client := addClientFlags(cmd)
	certFile := cmd.Flags().String("cert-file", "", "also check the SVID in this PEM `file` (leaf first)")
	daemonOnly := cmd.Flags().Bool("daemon-only", false, "only check that meshid serves; skip this process's SVID")
	asJSON := cli.JSONFlag(cmd, "the checks")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		e, err := client.endpoint()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), client.timeout)
		defer cancel()

		var checks []healthCheck
		add := func(name string, err error, ok string) {
			c := healthCheck{Name: name, OK: err == nil, Message: ok}
			if err != nil {
				c.Message = err.Error()
			}
			checks = append(checks, c)
		}
		daemonErr := serving(ctx, e)
		add("daemon", daemonErr, "serving at "+e.Addr())
		if !*daemonOnly && daemonErr == nil {
			msg, err := checkSVID(ctx, e, clock)
			add("svid", err, msg)
		}
		if *certFile != "" {
			msg, err := checkSVIDFile(*certFile, clock())
			add("cert-file", err, msg)
		}

		healthy := true
		for _, c := range checks {
			healthy = healthy && c.OK
		}
		stdout := cmd.OutOrStdout()
		if *asJSON {
			if err := cli.WriteJSON(stdout, struct {
				Healthy bool          `json:"healthy"`
				Checks  []healthCheck `json:"checks"`
			}{healthy, checks}); err != nil {
				return err
			}
		} else {
			for _, c := range checks {
				word := "ok  "
				if !c.OK {
					word = "FAIL"
				}
				fmt.Fprintf(stdout, "%s  %-9s %s\n", word, c.Name, c.Message)
			}
		}
		if !healthy {
			return errors.New("unhealthy")
		}
		return nil
	}
	return cmd
}

type healthCheck struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// serving asks the socket's gRPC health service about the whole server.
func serving(ctx context.Context, e endpoint.Endpoint) error {
	conn, err := grpc.NewClient(e.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("%s: %w", e, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return e.Explain(err)
	}
	if resp.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("meshid at %s says %s", e, resp.Status)
	}
	return nil
}

func checkSVID(ctx context.Context, e endpoint.Endpoint, clock func() time.Time) (string, error) {
	c, err := e.Client(ctx)
	if err != nil {
		return "", err
	}
	defer c.Close()
	svids, err := c.FetchX509SVIDs(ctx)
	if err != nil {
		return "", e.Explain(err)
	}
	now := clock()
	var msg string
	for _, s := range svids {
		if err := freshness(s.ID.String(), s.Certificates[0], now); err != nil {
			return "", err
		}
		if msg != "" {
			msg += "; "
		}
		msg += fmt.Sprintf("%s expires %s", s.ID, relTime(s.Certificates[0].NotAfter, now))
	}
	return msg, nil
}

func checkSVIDFile(path string, now time.Time) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return "", fmt.Errorf("%s: no PEM CERTIFICATE block", path)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	name := path
	if len(leaf.URIs) > 0 {
		name = fmt.Sprintf("%s (%s)", path, leaf.URIs[0])
	}
	if err := freshness(name, leaf, now); err != nil {
		return "", fmt.Errorf("%w; is `meshid svid watch` still running and rewriting it?", err)
	}
	return fmt.Sprintf("%s expires %s", name, relTime(leaf.NotAfter, now)), nil
}

// freshness fails for a certificate past renewal or expired.
func freshness(name string, leaf *x509.Certificate, now time.Time) error {
	switch {
	case !now.Before(leaf.NotAfter):
		return fmt.Errorf("%s expired %s (at %s)", name, relTime(leaf.NotAfter, now), leaf.NotAfter.UTC().Format(time.RFC3339))
	case helper.PastRenewal(leaf.NotBefore, leaf.NotAfter, now):
		return fmt.Errorf("%s is past 3/4 of its life and was not renewed (expires %s): rotation has stalled", name, relTime(leaf.NotAfter, now))
	}
	return nil
}
