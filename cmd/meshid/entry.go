package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/node"
)

// newEntryLintCmd checks an entries file for what meshid would refuse and
// for identities other workloads could claim.
func newEntryLintCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lint [--config meshid.yaml] [--entries FILE]",
		Short: "Check entries for what meshid refuses and what others could claim",
		Long: `Report, one line each with file:line, what meshid would refuse in an
entries file and what it would accept but should not: entries another
workload on the node could also satisfy, entries that overlap so that one
workload gets several identities, SPIFFE IDs given twice, TTLs above the
CA's, selectors of attestors meshid.yaml does not enable, templates whose
placeholders the workload itself chooses. Exits 1 when any finding is an
error.`,
		Example: `  meshid entry lint --config /etc/meshid/meshid.yaml
  meshid entry lint --entries entries.yaml --json`,
		Args:              cli.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	configPath := cli.ConfigFlag(cmd, "`meshid.yaml`: trust domain, CA TTL, enabled attestors and entries_file (default: built-in defaults)")
	entriesPath := cmd.Flags().String("entries", "", "the entries `file` (default: entries_file of the config)")
	_ = cmd.MarkFlagFilename("entries", "yaml", "yml")
	asJSON := cli.JSONFlag(cmd, "the findings")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		stdout := cmd.OutOrStdout()
		cfg, err := node.LoadConfig(*configPath)
		if err != nil {
			return err
		}
		if *entriesPath == "" {
			*entriesPath = cfg.EntriesFile
		}
		opts, err := node.LintOptions(cfg)
		if err != nil {
			return err
		}
		findings, err := identity.LintFile(*entriesPath, opts)
		if err != nil {
			return err
		}
		errs := identity.Errors(findings)
		if *asJSON {
			if err := cli.WriteJSON(stdout, struct {
				Findings []identity.Finding `json:"findings"`
				Errors   int                `json:"errors"`
				Warnings int                `json:"warnings"`
			}{append([]identity.Finding{}, findings...), errs, len(findings) - errs}); err != nil {
				return err
			}
		} else {
			for _, f := range findings {
				fmt.Fprintf(stdout, "%s: %s [%s] %s\n", f.Source, f.Level, f.Check, f.Message)
			}
			fmt.Fprintf(stdout, "%s: %d errors, %d warnings\n", *entriesPath, errs, len(findings)-errs)
		}
		if errs > 0 {
			return fmt.Errorf("%s: %d error-level findings", *entriesPath, errs)
		}
		return nil
	}
	return cmd
}

// newEntryExplainCmd asks the running daemon what it sees of a process
// and what each entry makes of it.
func newEntryExplainCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "explain --pid N [--config meshid.yaml | --admin-socket PATH]",
		Short: "Show what meshid sees of a process and which entries match",
		Long: `Ask the running meshid to attest process N as it would a caller on its
socket, and print the selectors it sees and, for each entry, whether it
matches or which of its selectors the process lacks. A template entry
shows the SPIFFE ID the process would get from it, the placeholders it
has no value for ({docker:label:NAME}), or why its value cannot be a
path segment.

The answer describes other processes and the whole entry table, so meshid
gives it only on its root-only admin socket (admin.socket_path, mode 0600):
run this as root.`,
		Example: `  meshid entry explain --pid $(pidof envoy) --config /etc/meshid/meshid.yaml
  meshid entry explain --pid 4242 --admin-socket /run/meshid/admin.sock --json`,
		Args:              cli.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	pid := cmd.Flags().Int("pid", 0, "the process to explain")
	admin := adminSocketFlags(cmd)
	asJSON := cli.JSONFlag(cmd, "the daemon's answer")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if *pid <= 0 {
			return cli.Usagef(cmd, "entry explain: -pid is required")
		}
		path, err := admin()
		if err != nil {
			return err
		}
		return explain(cmd.Context(), cmd.OutOrStdout(), path, *pid, *asJSON)
	}
	return cmd
}

// explain asks the daemon on its admin socket at path.
func explain(ctx context.Context, stdout io.Writer, admin string, pid int, asJSON bool) error {
	body, err := askAdmin(ctx, admin, "/explain?pid="+url.QueryEscape(strconv.Itoa(pid)))
	if err != nil {
		return err
	}
	if asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var x identity.Explanation
	if err := json.Unmarshal(body, &x); err != nil {
		return fmt.Errorf("meshid at %s answered %q: %w", admin, body, err)
	}
	printExplanation(stdout, x)
	return nil
}

// adminSocketFlags adds --config and --admin-socket, the two ways to name
// the daemon's admin socket, and returns what finds it: --admin-socket,
// else that of the config (admin.socket_path, or admin.sock beside
// socket_path).
func adminSocketFlags(cmd *cobra.Command) func() (string, error) {
	configPath := cli.ConfigFlag(cmd, "`meshid.yaml`, for its admin socket")
	admin := cmd.Flags().String("admin-socket", "", "the daemon's root-only admin socket (default: that of the config: admin.socket_path, or admin.sock beside socket_path)")
	return func() (string, error) {
		if *admin != "" {
			return *admin, nil
		}
		cfg, err := node.LoadConfig(*configPath)
		if err != nil {
			return "", err
		}
		return cfg.AdminSocketPath(), nil
	}
}

// askAdmin GETs path from the daemon's root-only admin socket and returns
// the body of a 200, or says why there is none.
func askAdmin(ctx context.Context, admin, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://meshid"+path, nil)
	if err != nil {
		return nil, err
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", admin)
	}}}
	resp, err := client.Do(req)
	switch {
	case errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("uid %d may not ask meshid at %s: its admin socket is root's only (mode 0600); run this as root", os.Getuid(), admin)
	case err != nil:
		return nil, fmt.Errorf("ask meshid at %s (is it running? see --admin-socket, --config): %w", admin, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("meshid at %s: %s", admin, strings.TrimSpace(string(body)))
	}
	return body, nil
}

func printExplanation(w io.Writer, x identity.Explanation) {
	fmt.Fprintf(w, "pid %d (uid %d, gid %d) presents:\n", x.PID, x.UID, x.GID)
	for _, s := range x.Selectors {
		fmt.Fprintf(w, "  %s\n", s)
	}
	matched := 0
	fmt.Fprintln(w, "entries:")
	for _, e := range x.Entries {
		name := e.SPIFFEID
		if e.Template != "" {
			name = e.Template
		}
		switch {
		case e.Matched && e.Template != "":
			matched++
			fmt.Fprintf(w, "  match     %s (%s) from template %s\n", e.SPIFFEID, e.Source, e.Template)
		case e.Matched:
			matched++
			fmt.Fprintf(w, "  match     %s (%s)\n", e.SPIFFEID, e.Source)
		case e.Refused != "":
			fmt.Fprintf(w, "  refused   %s (%s): %s\n", name, e.Source, e.Refused)
		default:
			fmt.Fprintf(w, "  no match  %s (%s): lacks %s\n", name, e.Source, strings.Join(e.Missing, ", "))
		}
	}
	if matched == 0 {
		fmt.Fprintln(w, "no entry matches: this process gets no identity")
	}
}
