package main

import (
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// bundleShow prints the trust bundles meshid gives the caller.
func bundleShow(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("bundle show", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprint(stderr, `Usage: meshid bundle show [-format pem|jwks] [-trust-domain TD]

Prints the trust bundles meshid's Workload API gives this process.
pem: the X.509 roots of every trust domain (own and federated), each group
after a "# spiffe://TD" line; -trust-domain keeps one.
jwks: one trust domain's SPIFFE bundle (X.509 roots and JWT keys, as a
JWKS document with "use" x509-svid / jwt-svid), the format federation
reads; default the trust domain of this process's SVID.

`)
		flags.PrintDefaults()
	}
	ep := addEndpointFlags(flags)
	format := flags.String("format", "pem", "pem or jwks")
	tdFlag := flags.String("trust-domain", "", "only this trust domain")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *format != "pem" && *format != "jwks" {
		flags.Usage()
		return fmt.Errorf("bundle show: -format %q: want pem or jwks", *format)
	}
	if flags.NArg() > 0 {
		flags.Usage()
		return fmt.Errorf("bundle show: unexpected argument %q", flags.Arg(0))
	}
	var td spiffeid.TrustDomain
	if *tdFlag != "" {
		var err error
		if td, err = spiffeid.TrustDomainFromString(*tdFlag); err != nil {
			return fmt.Errorf("-trust-domain %q: %w", *tdFlag, err)
		}
	}
	ctx, c, e, done, err := ep.connect()
	if err != nil {
		return err
	}
	defer done()

	if *format == "pem" {
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
