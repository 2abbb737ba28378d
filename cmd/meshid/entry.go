package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/node"
)

// entryLint checks an entries file for what meshid would refuse and for
// identities other workloads could claim.
func entryLint(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("entry lint", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprint(stderr, `Usage: meshid entry lint [-config meshid.yaml] [-entries FILE] [-json]

Reports, one line each with file:line, what meshid would refuse in an
entries file and what it would accept but should not: entries another
workload on the node could also satisfy, entries that overlap so that one
workload gets several identities, SPIFFE IDs given twice, TTLs above the
CA's, selectors of attestors meshid.yaml does not enable. Exits 1 when any
finding is an error.

`)
		flags.PrintDefaults()
	}
	configPath := flags.String("config", "", "meshid.yaml: trust domain, CA TTL, enabled attestors and entries_file (default: built-in defaults)")
	entriesPath := flags.String("entries", "", "the entries file (default: entries_file of the config)")
	asJSON := flags.Bool("json", false, "print the findings as JSON")
	if err := flags.Parse(args); err != nil {
		return err
	}
	cfg, err := node.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	if *entriesPath == "" {
		*entriesPath = cfg.EntriesFile
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return err
	}
	findings, err := identity.LintFile(*entriesPath, identity.LintOptions{TrustDomain: td, CATTL: cfg.CA.TTL, Types: attestedTypes(cfg)})
	if err != nil {
		return err
	}
	errs := identity.Errors(findings)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
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

// attestedTypes are the selector types the daemon would attest with cfg.
func attestedTypes(cfg config.Config) []string {
	types := []string{"unix"}
	if cfg.Docker != nil {
		types = append(types, "docker")
	}
	if cfg.K8s != nil {
		types = append(types, "k8s")
	}
	return types
}

// entryExplain asks the running daemon what it sees of a process and what
// each entry makes of it.
func entryExplain(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("entry explain", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprint(stderr, `Usage: meshid entry explain -pid N [-config meshid.yaml | -admin HOST:PORT] [-json]

Asks the running meshid (its admin endpoint) to attest process N as it
would a caller on its socket, and prints the selectors it sees and, for
each entry, whether it matches or which of its selectors the process lacks.

`)
		flags.PrintDefaults()
	}
	pid := flags.Int("pid", 0, "the process to explain")
	configPath := flags.String("config", "", "meshid.yaml, for admin.address")
	admin := flags.String("admin", "", "the daemon's admin address (default: admin.address of the config)")
	asJSON := flags.Bool("json", false, "print the daemon's answer as JSON")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *pid <= 0 {
		flags.Usage()
		return errors.New("entry explain: -pid is required")
	}
	if *admin == "" {
		cfg, err := node.LoadConfig(*configPath)
		if err != nil {
			return err
		}
		*admin = cfg.Admin.Address
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get("http://" + *admin + "/explain?pid=" + url.QueryEscape(strconv.Itoa(*pid)))
	if err != nil {
		return fmt.Errorf("ask meshid at %s (is it running? see -admin): %w", *admin, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("meshid at %s: %s", *admin, strings.TrimSpace(string(body)))
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	var x identity.Explanation
	if err := json.Unmarshal(body, &x); err != nil {
		return fmt.Errorf("meshid at %s answered %q: %w", *admin, body, err)
	}
	printExplanation(stdout, x)
	return nil
}

func printExplanation(w io.Writer, x identity.Explanation) {
	fmt.Fprintf(w, "pid %d (uid %d, gid %d) presents:\n", x.PID, x.UID, x.GID)
	for _, s := range x.Selectors {
		fmt.Fprintf(w, "  %s\n", s)
	}
	matched := 0
	fmt.Fprintln(w, "entries:")
	for _, e := range x.Entries {
		if e.Matched {
			matched++
			fmt.Fprintf(w, "  match     %s (%s)\n", e.SPIFFEID, e.Source)
		} else {
			fmt.Fprintf(w, "  no match  %s (%s): lacks %s\n", e.SPIFFEID, e.Source, strings.Join(e.Missing, ", "))
		}
	}
	if matched == 0 {
		fmt.Fprintln(w, "no entry matches: this process gets no identity")
	}
}
