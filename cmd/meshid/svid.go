package main

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// svidFetch prints (and optionally writes) the caller's X509-SVIDs.
func svidFetch(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("svid fetch", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprint(stderr, `Usage: meshid svid fetch [-socket unix:///PATH] [-write DIR [file flags]] [-json]

Asks meshid's Workload API for this process's X509-SVIDs and prints each
one's SPIFFE ID, expiry and chain, and the trust bundles that came with them.
With -write, the default SVID, its key (mode 0600) and its trust domain's
roots are written to DIR atomically: a reader sees the old file or the new
one, never half of one.

`)
		flags.PrintDefaults()
	}
	ep := addEndpointFlags(flags)
	files := addSVIDFileFlags(flags)
	asJSON := flags.Bool("json", false, "print JSON")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		flags.Usage()
		return fmt.Errorf("svid fetch: unexpected argument %q", flags.Arg(0))
	}
	ctx, c, e, done, err := ep.connect()
	if err != nil {
		return err
	}
	defer done()
	x509ctx, err := c.FetchX509Context(ctx)
	if err != nil {
		return e.explain(err)
	}
	now := time.Now()
	report := svidReport{SVIDs: []svidInfo{}, Bundles: bundleInfos(x509ctx.Bundles)}
	for _, s := range x509ctx.SVIDs {
		report.SVIDs = append(report.SVIDs, describeSVID(s, now))
	}
	if files.dir != nil && *files.dir != "" {
		if report.Written, err = files.write(x509ctx.SVIDs[0], x509ctx.Bundles); err != nil {
			return err
		}
	}
	if *asJSON {
		return writeJSON(stdout, report)
	}
	printSVIDReport(stdout, report, now)
	return nil
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
		Stalled:   pastRenewal(leaf.NotBefore, leaf.NotAfter, now),
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

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// svidFiles says where an SVID goes on disk.
type svidFiles struct {
	dir, cert, key, bundle *string
	federated              *bool
}

func addSVIDFileFlags(flags *flag.FlagSet) svidFiles {
	return svidFiles{
		dir:       flags.String("write", "", "write the SVID, key and bundle into this directory"),
		cert:      flags.String("cert-file", "svid.pem", "name of the certificate chain file (leaf first) in -write"),
		key:       flags.String("key-file", "svid_key.pem", "name of the private key file (PKCS#8, mode 0600) in -write"),
		bundle:    flags.String("bundle-file", "bundle.pem", "name of the trust bundle file (the SVID's trust domain's roots) in -write"),
		federated: flags.Bool("federated", false, "also put federated trust domains' roots in the bundle file"),
	}
}

// write writes the SVID's chain, key and bundle, each atomically, and
// returns the paths written.
func (f svidFiles) write(s *x509svid.SVID, bundles *x509bundle.Set) ([]string, error) {
	certPEM, keyPEM, err := s.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encode SVID %s: %w", s.ID, err)
	}
	bundlePEM, err := bundlePEM(s, bundles, *f.federated)
	if err != nil {
		return nil, err
	}
	var written []string
	for _, out := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{*f.cert, certPEM, 0o644},
		{*f.key, keyPEM, 0o600},
		{*f.bundle, bundlePEM, 0o644},
	} {
		path := filepath.Join(*f.dir, out.name)
		if err := writeFileAtomic(path, out.data, out.mode); err != nil {
			return written, err
		}
		written = append(written, path)
	}
	return written, nil
}

// bundlePEM is the roots of the SVID's trust domain, then, when federated
// is set, every other trust domain's.
func bundlePEM(s *x509svid.SVID, set *x509bundle.Set, federated bool) ([]byte, error) {
	own, ok := set.Get(s.ID.TrustDomain())
	if !ok {
		return nil, fmt.Errorf("meshid sent no bundle for %s, the trust domain of %s", s.ID.TrustDomain(), s.ID)
	}
	var out []byte
	add := func(b *x509bundle.Bundle) {
		for _, c := range b.X509Authorities() {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
	}
	add(own)
	if federated {
		for _, b := range set.Bundles() {
			if b.TrustDomain() != own.TrustDomain() {
				add(b)
			}
		}
	}
	return out, nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory and a rename, so that a reader sees the old content or the new,
// never a part; on failure nothing is left behind but the old file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir, name := filepath.Dir(path), filepath.Base(path)
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w%s", path, unwrapPathError(err), writeHint(dir, err))
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes 0600; widen only what may be read by others.
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPathError(err))
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: replace it: %w", path, unwrapPathError(err))
	}
	return nil
}

// unwrapPathError drops the temporary file's name from an error: the user
// asked for path, not for our scratch name.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

func writeHint(dir string, err error) string {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Sprintf(" (directory %s does not exist)", dir)
	case errors.Is(err, os.ErrPermission):
		return fmt.Sprintf(" (uid %d may not create files in %s; choose a directory it owns)", os.Getuid(), dir)
	}
	return ""
}
