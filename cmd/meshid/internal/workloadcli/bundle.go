package workloadcli

import (
	"encoding/pem"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
)

// Formats of bundle show: PEM roots, or SPIFFE bundle documents (SPIRE's
// name; jwks is the one meshid used first).
const (
	formatPEM    = "pem"
	formatSPIFFE = "spiffe"
	formatJWKS   = "jwks"
)

// newBundleShowCmd prints the trust bundles meshid gives the caller.
func newBundleShowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "show [--format pem|spiffe] [--trust-domain TD]",
		Short: "Print the trust bundles (pem or spiffe)",
		Long: `Print the trust bundles meshid's Workload API gives this process.
pem (the default): the X.509 roots of every trust domain (own and
federated), each group after a "# spiffe://TD" line; --trust-domain keeps one.
spiffe: one trust domain's SPIFFE bundle (X.509 roots and JWT keys, as a
JWKS document with "use" x509-svid / jwt-svid), the format federation reads
and SPIRE's "bundle show -format spiffe" prints; default the trust domain of
this process's SVID. jwks is another name for spiffe.`,
		Example: `  meshid bundle show
  meshid bundle show --format spiffe > example.org.bundle.json
  meshid bundle show --format spiffe --trust-domain partner.example`,
		Args:              cli.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	client := addClientFlags(cmd)
	format := cmd.Flags().String("format", formatPEM, "pem or spiffe (or jwks, the same as spiffe)")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{formatPEM, formatSPIFFE}, cobra.ShellCompDirectiveNoFileComp))
	tdFlag := cmd.Flags().String("trust-domain", "", "only this trust domain")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		switch *format {
		case formatPEM, formatSPIFFE, formatJWKS:
		default:
			return cli.Usagef(cmd, "bundle show: -format %q: want pem or spiffe", *format)
		}
		var td spiffeid.TrustDomain
		if *tdFlag != "" {
			var err error
			if td, err = spiffeid.TrustDomainFromString(*tdFlag); err != nil {
				return fmt.Errorf("-trust-domain %q: %w", *tdFlag, err)
			}
		}
		ctx, c, e, done, err := client.connect(cmd.Context())
		if err != nil {
			return err
		}
		defer done()
		stdout := cmd.OutOrStdout()

		if *format == formatPEM {
			set, err := c.FetchX509Bundles(ctx)
			if err != nil {
				return e.Explain(err)
			}
			return printPEMBundles(stdout, set, td)
		}

		x509ctx, err := c.FetchX509Context(ctx)
		if err != nil {
			return e.Explain(err)
		}
		if td.IsZero() {
			td = x509ctx.DefaultSVID().ID.TrustDomain()
		}
		jwtSet, err := c.FetchJWTBundles(ctx)
		if err != nil {
			return e.Explain(err)
		}
		doc, err := spiffeBundle(td, x509ctx.Bundles, jwtSet)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", doc)
		return err
	}
	return cmd
}

func printPEMBundles(w io.Writer, set *x509bundle.Set, only spiffeid.TrustDomain) error {
	bundles := set.Bundles()
	if !only.IsZero() {
		b, ok := set.Get(only)
		if !ok {
			return noBundle(only, set)
		}
		bundles = []*x509bundle.Bundle{b}
	}
	for _, b := range bundles {
		fmt.Fprintf(w, "# %s\n", b.TrustDomain().IDString())
		for _, c := range b.X509Authorities() {
			if err := pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}); err != nil {
				return err
			}
		}
	}
	return nil
}

func noBundle(td spiffeid.TrustDomain, set *x509bundle.Set) error {
	var names []string
	for _, b := range set.Bundles() {
		names = append(names, b.TrustDomain().Name())
	}
	return fmt.Errorf("meshid gives this process no bundle for %s (it has: %s)", td, strings.Join(names, ", "))
}

// spiffeBundle joins one trust domain's X.509 roots and JWT keys into a
// SPIFFE bundle document.
func spiffeBundle(td spiffeid.TrustDomain, x509Set *x509bundle.Set, jwtSet *jwtbundle.Set) ([]byte, error) {
	b := spiffebundle.New(td)
	found := false
	if xb, ok := x509Set.Get(td); ok {
		b.SetX509Authorities(xb.X509Authorities())
		found = true
	}
	if jb, ok := jwtSet.Get(td); ok {
		b.SetJWTAuthorities(jb.JWTAuthorities())
		found = true
	}
	if !found {
		return nil, noBundle(td, x509Set)
	}
	doc, err := b.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encode bundle of %s: %w", td, err)
	}
	return doc, nil
}
