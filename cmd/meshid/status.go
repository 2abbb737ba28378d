package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/node"
)

// newStatusCmd asks the running daemon for its live state.
func newStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "status [--config meshid.yaml | --admin-socket PATH] [--json]",
		GroupID: nodeGroup,
		Short:   "Show the daemon's live streams, SVIDs, CA timeline, bundles and policy revision",
		Long: `Ask the running meshid what it serves now: every open SDS stream (the
Envoy's pid and uid, its selectors and SPIFFE IDs, the resources and
versions it holds, its last ACK and last NACK with Envoy's message), every
Workload API stream, each SVID meshid holds (serial, expiry, renewal), the
CA generations and their timeline (active, next, retired), the federated
bundles and their age, and the policy revision deciding.

The answer describes other processes, so meshid gives it only on its
root-only admin socket (admin.socket_path, mode 0600): run this as root.
--json prints the daemon's answer for scripts; its fields are listed in
docs/cli.md.`,
		Example: `  meshid status --config /etc/meshid/meshid.yaml
  meshid status --admin-socket /run/meshid/admin.sock --json | jq '.sds_streams[] | {pid, last_nack}'`,
		Args:              cli.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	admin := adminSocketFlags(cmd)
	asJSON := cli.JSONFlag(cmd, "the daemon's answer")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		path, err := admin()
		if err != nil {
			return err
		}
		body, err := askAdmin(cmd.Context(), path, "/status")
		if err != nil {
			return err
		}
		if *asJSON {
			_, err := cmd.OutOrStdout().Write(body)
			return err
		}
		var st node.Status
		if err := json.Unmarshal(body, &st); err != nil {
			return fmt.Errorf("meshid at %s answered %q: %w", path, body, err)
		}
		return printStatus(cmd.OutOrStdout(), st)
	}
	return cmd
}

// printStatus is the status as a person reads it: a line about the node,
// then a table per part. Times are relative to the daemon's clock.
func printStatus(w io.Writer, st node.Status) error {
	now := st.Time
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	}
	in := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		if d := t.Sub(now).Round(time.Second); d >= 0 {
			return "in " + d.String()
		}
		return now.Sub(t).Round(time.Second).String() + " ago"
	}
	fmt.Fprintf(w, "meshid %s (commit %s, %s), trust domain %s, up %s\n", st.Build.Version, short(st.Build.Commit, 12), st.Build.GoVersion,
		st.TrustDomain, now.Sub(st.Started).Round(time.Second))
	if st.Policy.Revision == "" {
		fmt.Fprintln(w, "no policy in force: every request is denied until each bundle below has a copy")
	} else {
		from := st.Policy.Dir
		switch n := len(st.Policy.Bundles); {
		case from == "" && n == 1:
			from = "the bundle"
		case from == "" && n > 1:
			from = fmt.Sprintf("%d bundles", n)
		case n == 1:
			from += " and the bundle"
		case n > 1:
			from += fmt.Sprintf(" and %d bundles", n)
		}
		fmt.Fprintf(w, "policy revision %s (%d files from %s, rego %s)\n", st.Policy.Revision, st.Policy.Files, orDash(from), st.Policy.RegoVersion)
	}
	for _, b := range st.Policy.Bundles {
		state := "active"
		switch {
		case !b.Active:
			state = "NOT ACTIVE (every request is denied)"
		case b.FromDisk:
			state = "active, kept copy read at start"
		}
		fmt.Fprintf(w, "  bundle %s from %s: %s, revision %s, etag %s\n", b.Name, strings.TrimSuffix(b.URL, "/")+"/"+strings.TrimPrefix(b.Resource, "/"), state, orDash(b.Revision), orDash(b.ETag))
		fmt.Fprintf(w, "    last download %s, activation %s, success %s\n", ago(b.LastDownload), ago(b.LastActivation), ago(b.LastSuccess))
		if f := b.LastFailure; f != nil {
			fmt.Fprintf(w, "    last failure  %s (%s): %s\n", ago(f.At), f.Reason, f.Error)
		}
	}
	if d := st.DecisionLog; d != nil {
		fmt.Fprintf(w, "decision log to %s: %d shipped, last upload %s; %d buffered (%d bytes), %d dropped, %d failed uploads\n",
			d.Collector, d.Shipped, ago(d.LastSuccess), d.BufferedEvents, d.BufferedBytes, d.Dropped, d.FailedUploads)
		if d.LastError != "" {
			fmt.Fprintf(w, "  failing: %s\n", d.LastError)
		}
	}

	// A stream is a block: its caller on the first line, then what was
	// last sent on it, one resource a line.
	fmt.Fprintf(w, "\nSDS streams (%d)\n", len(st.SDSStreams))
	for _, s := range st.SDSStreams {
		fmt.Fprintf(w, "  pid %d uid %d  %s  node %q  started %s  version %s  last ACK %s\n",
			s.PID, s.UID, s.API, s.NodeID, ago(s.Started), orDash(s.Version), ago(s.LastACK))
		fmt.Fprintf(w, "    spiffe ids  %s\n    selectors   %s\n", list(s.SPIFFEIDs), list(s.Selectors))
		for _, r := range s.Resources {
			if r.Serial != "" {
				fmt.Fprintf(w, "    sent        %s  version %s  serial %s  expires %s\n", r.Name, r.Version, r.Serial, in(r.Expires))
			} else {
				fmt.Fprintf(w, "    sent        %s  version %s\n", r.Name, r.Version)
			}
		}
		if n := s.LastNACK; n != nil {
			fmt.Fprintf(w, "    last NACK   %s, of version %s: %s\n", ago(n.At), n.Version, n.Message)
		}
	}

	fmt.Fprintf(w, "\nWorkload API streams (%d)\n", len(st.WorkloadStreams))
	for _, s := range st.WorkloadStreams {
		fmt.Fprintf(w, "  pid %d uid %d  %s  started %s  %d responses, last %s\n",
			s.PID, s.UID, s.Method, ago(s.Started), s.Responses, ago(s.LastResponse))
		fmt.Fprintf(w, "    spiffe ids  %s\n    selectors   %s\n", list(s.SPIFFEIDs), list(s.Selectors))
	}

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(cells ...string) { fmt.Fprintln(tw, strings.Join(cells, "\t")) }
	fmt.Fprintf(tw, "\nX509-SVIDs (%d)\n", len(st.SVIDs))
	if len(st.SVIDs) > 0 {
		row("SPIFFE ID", "SERIAL", "EXPIRES", "RENEWS", "")
	}
	for _, s := range st.SVIDs {
		self := ""
		if s.Self {
			self = "meshid's own"
		}
		row(s.SPIFFEID, s.Serial, in(s.NotAfter), in(s.RenewAt), self)
	}

	fmt.Fprintf(tw, "\nCA generations (%s)\n", st.CA.Source)
	row("GENERATION", "STATE", "SERIAL", "NOT BEFORE", "NOT AFTER", "SIGNS FROM")
	for _, g := range st.CA.Generations {
		row(g.Name, g.State, short(g.Serial, 16), g.NotBefore.Format(time.RFC3339), g.NotAfter.Format(time.RFC3339)+" ("+in(g.NotAfter)+")", g.SignsFrom.Format(time.RFC3339))
	}

	fmt.Fprintf(tw, "\nFederated bundles (%d)\n", len(st.Federated))
	if len(st.Federated) > 0 {
		row("TRUST DOMAIN", "X509 ROOTS", "JWT KEYS", "ROOTS EXPIRE", "AGE", "FROM")
	}
	for _, b := range st.Federated {
		from := b.BundleFile
		if b.EndpointURL != "" {
			from = b.EndpointURL + " (bootstrap " + b.BundleFile + ")"
		}
		row(b.TrustDomain, fmt.Sprint(b.X509Roots), fmt.Sprint(b.JWTKeys), in(b.RootsExpire), (time.Duration(b.AgeSeconds) * time.Second).String(), from)
	}
	return tw.Flush()
}

func list(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// short cuts a long hex string for a table; --json has it whole.
func short(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
