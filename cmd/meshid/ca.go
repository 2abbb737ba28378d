package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/cmd/meshid/internal/cli"
)

// newCAMintIntermediateCmd issues an intermediate CA for one node from a
// root the operator holds, ready for that node's ca.upstream.
func newCAMintIntermediateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mint-intermediate --root-cert FILE --root-key FILE --trust-domain TD --out DIR [--ttl 720h]",
		Short: "Issue a node's intermediate CA from a root",
		Long: `Issue a P-256 intermediate CA for one meshid node, signed by a self-signed
root (an organisation's CA, or another meshid node's data_dir/ca/NNNNNN/).
Writes intermediate.crt, intermediate.key (0600) and bundle.crt into DIR,
never replacing existing files, and prints the ca.upstream section that
uses them. Nodes with intermediates of the same root trust each other's
SVIDs.`,
		Example: `  meshid ca mint-intermediate --root-cert root.crt --root-key root.key \
      --trust-domain example.org --out /etc/meshid/node-a --ttl 48h`,
		Args:              cli.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	flags := cmd.Flags()
	rootCert := flags.String("root-cert", "", "the root's certificate (PEM)")
	rootKey := flags.String("root-key", "", "the root's private key (PEM, not readable by group or others)")
	trustDomain := flags.String("trust-domain", "", "the trust domain of the node")
	out := flags.String("out", "", "`directory` to write into")
	ttl := flags.Duration("ttl", 30*24*time.Hour, "lifetime of the intermediate (capped at the root's)")
	_ = cmd.MarkFlagDirname("out")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		for _, f := range []struct{ name, value string }{
			{"-root-cert", *rootCert}, {"-root-key", *rootKey}, {"-trust-domain", *trustDomain}, {"-out", *out},
		} {
			if f.value == "" {
				return cli.Usagef(cmd, "ca mint-intermediate: %s is required", f.name)
			}
		}
		td, err := spiffeid.TrustDomainFromString(*trustDomain)
		if err != nil {
			return fmt.Errorf("-trust-domain %q: %w", *trustDomain, err)
		}
		if err := ca.MintIntermediate(ca.IntermediateOptions{
			RootCertFile: *rootCert, RootKeyFile: *rootKey, TrustDomain: td, TTL: *ttl, OutDir: *out,
		}); err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), `wrote an intermediate CA for %s into %s; in the node's meshid.yaml:
ca:
  upstream:
    cert_file: %s
    key_file: %s
    bundle_file: %s
`, td.Name(), *out, filepath.Join(*out, ca.IntermediateCertFile), filepath.Join(*out, ca.IntermediateKeyFile), filepath.Join(*out, ca.UpstreamBundleFile))
		return nil
	}
	return cmd
}
