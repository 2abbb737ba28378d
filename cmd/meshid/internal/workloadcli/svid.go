package workloadcli

import (
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/helper"
)

// newSVIDFetchCmd prints (and optionally writes) the caller's X509-SVIDs.
func newSVIDFetchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fetch [--socket PATH] [--write DIR [file flags]]",
		Short: "Print (and write) this process's X509-SVIDs from the Workload API",
		Long: `Ask meshid's Workload API for this process's X509-SVIDs and print each
one's SPIFFE ID, expiry and chain, and the trust bundles that came with them.
With --write, the default SVID, its key (mode 0600) and its trust domain's
roots are written to DIR atomically: a reader sees the old file or the new
one, never half of one.`,
		Example: `  meshid svid fetch
  meshid svid fetch --write /run/svid --key-file tls.key
  SPIFFE_ENDPOINT_SOCKET=unix:///run/meshid/agent.sock meshid svid fetch --json`,
		Args:              cli.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	client := addClientFlags(cmd)
	files := addSVIDFileFlags(cmd)
	asJSON := cli.JSONFlag(cmd, "the SVIDs and bundles")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx, c, e, done, err := client.connect(cmd.Context())
		if err != nil {
			return err
		}
		defer done()
		x509ctx, err := c.FetchX509Context(ctx)
		if err != nil {
			return e.Explain(err)
		}
		now := time.Now()
		report := svidReport{SVIDs: []svidInfo{}, Bundles: bundleInfos(x509ctx.Bundles)}
		for _, s := range x509ctx.SVIDs {
			report.SVIDs = append(report.SVIDs, describeSVID(s, now))
		}
		if files.Dir != "" {
			if report.Written, err = files.Write(x509ctx.DefaultSVID(), x509ctx.Bundles); err != nil {
				return err
			}
		}
		if *asJSON {
			return cli.WriteJSON(cmd.OutOrStdout(), report)
		}
		printSVIDReport(cmd.OutOrStdout(), report, now)
		return nil
	}
	return cmd
}

// svidReport is what svid fetch prints.
type svidReport struct {
	SVIDs   []svidInfo   `json:"svids"`
	Bundles []bundleInfo `json:"bundles"`
	Written []string     `json:"written,omitempty"`
}

type svidInfo struct {
	SPIFFEID  string     `json:"spiffe_id"`
	Hint      string     `json:"hint,omitempty"`
	NotBefore time.Time  `json:"not_before"`
	ExpiresAt time.Time  `json:"expires_at"`
	ExpiresIn int64      `json:"expires_in_seconds"`
	Stalled   bool       `json:"past_renewal"` // past 3/4 of its life
	Chain     []certInfo `json:"chain"`
}

type certInfo struct {
	Subject   string    `json:"subject"`
	Issuer    string    `json:"issuer"`
	Serial    string    `json:"serial"`
	IsCA      bool      `json:"is_ca"`
	NotAfter  time.Time `json:"not_after"`
	URISAN    []string  `json:"uri_sans,omitempty"`
	SHA256Hex string    `json:"sha256"`
}

type bundleInfo struct {
	TrustDomain string     `json:"trust_domain"`
	Roots       []certInfo `json:"roots"`
}

func describeCert(c *x509.Certificate) certInfo {
	info := certInfo{
		Subject:   c.Subject.String(),
		Issuer:    c.Issuer.String(),
		Serial:    c.SerialNumber.Text(16),
		IsCA:      c.IsCA,
		NotAfter:  c.NotAfter.UTC(),
		SHA256Hex: fmt.Sprintf("%x", sha256.Sum256(c.Raw)),
	}
	for _, u := range c.URIs {
		info.URISAN = append(info.URISAN, u.String())
	}
	return info
}

func describeSVID(s *x509svid.SVID, now time.Time) svidInfo {
	leaf := s.Certificates[0]
	info := svidInfo{
		SPIFFEID:  s.ID.String(),
		Hint:      s.Hint,
		NotBefore: leaf.NotBefore.UTC(),
		ExpiresAt: leaf.NotAfter.UTC(),
		ExpiresIn: int64(leaf.NotAfter.Sub(now) / time.Second),
		Stalled:   helper.PastRenewal(leaf.NotBefore, leaf.NotAfter, now),
	}
	for _, c := range s.Certificates {
		info.Chain = append(info.Chain, describeCert(c))
	}
	return info
}

func bundleInfos(set *x509bundle.Set) []bundleInfo {
	out := []bundleInfo{}
	if set == nil {
		return out
	}
	for _, b := range set.Bundles() {
		bi := bundleInfo{TrustDomain: b.TrustDomain().Name(), Roots: []certInfo{}}
		for _, c := range b.X509Authorities() {
			bi.Roots = append(bi.Roots, describeCert(c))
		}
		out = append(out, bi)
	}
	return out
}

func printSVIDReport(w io.Writer, r svidReport, now time.Time) {
	for i, s := range r.SVIDs {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "SPIFFE ID  %s\n", s.SPIFFEID)
		if s.Hint != "" {
			fmt.Fprintf(w, "Hint       %s\n", s.Hint)
		}
		fmt.Fprintf(w, "Expires    %s (%s)", relTime(s.ExpiresAt, now), s.ExpiresAt.Format(time.RFC3339))
		if s.Stalled {
			fmt.Fprint(w, "  WARNING: past 3/4 of its life and not renewed")
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "Chain      %d certificate(s)\n", len(s.Chain))
		for j, c := range s.Chain {
			role := "leaf"
			if j > 0 {
				role = "CA  "
			}
			fmt.Fprintf(w, "  %s  %s  issuer %q  serial %s  expires %s\n", role, subjectOrSAN(c), c.Issuer, shortHex(c.Serial), relTime(c.NotAfter, now))
		}
	}
	for _, b := range r.Bundles {
		fmt.Fprintf(w, "Bundle     %s: %d root(s)\n", b.TrustDomain, len(b.Roots))
		for _, c := range b.Roots {
			fmt.Fprintf(w, "  %q  sha256 %s  expires %s\n", c.Subject, shortHex(c.SHA256Hex), relTime(c.NotAfter, now))
		}
	}
	for _, f := range r.Written {
		fmt.Fprintf(w, "Wrote      %s\n", f)
	}
}

func subjectOrSAN(c certInfo) string {
	if len(c.URISAN) > 0 {
		return strings.Join(c.URISAN, ",")
	}
	return fmt.Sprintf("%q", c.Subject)
}

func shortHex(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return s
}

// addSVIDFileFlags are the flags that say where --write puts an SVID.
func addSVIDFileFlags(cmd *cobra.Command) *helper.Files {
	f := &helper.Files{}
	flags := cmd.Flags()
	flags.StringVar(&f.Dir, "write", "", "write the SVID, key and bundle into this `directory`")
	flags.StringVar(&f.Cert, "cert-file", helper.DefaultCertFile, "name of the certificate chain file (leaf first) in --write")
	flags.StringVar(&f.Key, "key-file", helper.DefaultKeyFile, "name of the private key file (PKCS#8, mode 0600) in --write")
	flags.StringVar(&f.Bundle, "bundle-file", helper.DefaultBundleFile, "name of the trust bundle file (the SVID's trust domain's roots) in --write")
	flags.BoolVar(&f.Federated, "federated", false, "also put federated trust domains' roots in the bundle file")
	_ = cmd.MarkFlagDirname("write")
	return f
}

// relTime says when t is relative to now, to the second: "in 4m59s",
// "3s ago".
func relTime(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	switch {
	case d > 0:
		return "in " + d.String()
	case d < 0:
		return (-d).String() + " ago"
	default:
		return "now"
	}
}
