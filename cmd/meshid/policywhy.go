package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/node"
)

// newPolicyWhyCmd finds a logged decision and replays it, with OPA's
// tracer, against the policy revision that decided it.
func newPolicyWhyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "why DECISION_ID",
		Short: "Say why a logged decision was what it was, by replaying it",
		Long: `Find DECISION_ID (the x-meshid-decision-id header of a response, or a
decision log line's decision_id) in meshid's decision log, evaluate it again
with OPA's tracer against the policy revision that decided it (kept in
data_dir/policies), and print in plain words the rules of the decision,
whether each applied and, for those that did not, the first expression that
failed, with file:line and the values it saw.

With --config, the decision log is authz.decision_log (and its rotated
files) and the revisions are in data_dir; --log and --data-dir say so
instead, or override them.`,
		Example: `  meshid policy why --config /etc/meshid/meshid.yaml 0193a9c2-7f1e-7b3d-9c1a-4e2f6d8b0a17
  meshid policy why --log /var/log/meshid/decisions.jsonl --data-dir /var/lib/meshid 0193a9c2-…`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cli.Usagef(cmd, "policy why: want one DECISION_ID, got %d arguments", len(args))
			}
			if !decisionlog.ValidID(args[0]) {
				return cli.Usagef(cmd, "policy why: %q is not a decision id (a UUID such as 0193a9c2-7f1e-7b3d-9c1a-4e2f6d8b0a17, lower case)", args[0])
			}
			return nil
		},
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	flags := cmd.Flags()
	configPath := cli.ConfigFlag(cmd, "find the decision log (authz.decision_log) and data_dir in this `meshid.yaml`")
	logPath := flags.String("log", "", "the decision log `file` (authz.decision_log); its rotated files are read too")
	dataDir := flags.String("data-dir", "", "meshid's data_dir, which keeps the policy revisions (`dir`)")
	_ = cmd.MarkFlagFilename("log", "jsonl")
	_ = cmd.MarkFlagDirname("data-dir")

	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		id := args[0]
		maxFiles := 0
		if *configPath != "" {
			cfg, err := node.LoadConfig(*configPath)
			if err != nil {
				return err
			}
			if *logPath == "" {
				switch cfg.Authz.DecisionLog.File {
				case "":
					if cfg.Authz.DecisionLog.Service != nil {
						return fmt.Errorf("%s ships decisions to a collector only: give a file that holds them with -log", *configPath)
					}
					return fmt.Errorf("%s has no authz.decision_log: meshid logs no decisions, so none can be replayed", *configPath)
				case config.DecisionLogStderr:
					return fmt.Errorf("%s logs decisions to stderr: give the file that holds them with -log", *configPath)
				}
				*logPath = cfg.Authz.DecisionLog.File
				if cfg.Authz.DecisionLogMaxBytes > 0 {
					maxFiles = cfg.Authz.DecisionLogMaxFiles
				}
			}
			if *dataDir == "" {
				*dataDir = cfg.DataDir
			}
		}
		if *logPath == "" || *dataDir == "" {
			return cli.Usagef(cmd, "policy why: give -config, or -log and -data-dir")
		}
		line, err := decisionlog.Find(*logPath, maxFiles, id)
		if err != nil {
			return err
		}
		r, err := node.ReplayDecision(cmd.Context(), line, decisionlog.NewRevisions(node.RevisionsDir(*dataDir)))
		if err != nil {
			return err
		}
		printReplay(cmd.OutOrStdout(), r)
		return nil
	}
	return cmd
}

// printReplay prints a replayed decision: what the log says of it, then
// the explanation.
func printReplay(w io.Writer, r *node.Replay) {
	l := r.Line
	verdict := "denied"
	if l.Allowed {
		verdict = "allowed"
	}
	if l.DryRun && !l.Allowed {
		verdict = "denied by the policy, allowed by dry run"
	}
	fmt.Fprintf(w, "decision %s: %s at %s (%s:%d)\n", l.DecisionID, verdict, l.Timestamp.UTC().Format("2006-01-02T15:04:05.000Z07:00"), l.File, l.Number)
	if req := requestLine(l); req != "" {
		fmt.Fprintf(w, "  request: %s\n", req)
	}
	if l.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", l.Error)
	}
	if l.Reason != "" {
		fmt.Fprintf(w, "  logged reason: %s\n", l.Reason)
	}
	fmt.Fprintf(w, "  policy revision %s, read from %s, kept in %s\n", r.Kept.Revision, r.Kept.PolicyDir, filepath.Dir(r.Kept.FilesDir))
	fmt.Fprintln(w, "replayed with OPA's tracer:")
	printPolicyExplanation(w, r.Explanation, r.Where)
	if r.Differs != "" {
		fmt.Fprintf(w, "note: %s\n", r.Differs)
	}
}

// printPolicyExplanation prints an explanation indented, with policy file names
// relative to the working directory when they are inside it.
func printPolicyExplanation(w io.Writer, x *authz.Explanation, where func(string) string) {
	wd, _ := os.Getwd()
	show := func(file string) string {
		if where != nil {
			file = where(file)
		}
		if rel, err := filepath.Rel(wd, file); err == nil && wd != "" && filepath.IsLocal(rel) {
			return rel
		}
		return file
	}
	for _, line := range x.Lines(show) {
		fmt.Fprintf(w, "  %s\n", line)
	}
}

// requestLine is who asked for what, from a logged input: method, path,
// source and destination SPIFFE IDs.
func requestLine(l *decisionlog.Line) string {
	var in struct {
		Attributes struct {
			Request struct {
				HTTP struct {
					Method string `json:"method"`
					Path   string `json:"path"`
				} `json:"http"`
			} `json:"request"`
		} `json:"attributes"`
		SPIFFE struct {
			Source      struct{ ID string } `json:"source"`
			Destination struct{ ID string } `json:"destination"`
		} `json:"spiffe"`
	}
	if len(l.Input) == 0 || json.Unmarshal(l.Input, &in) != nil {
		return ""
	}
	var parts []string
	if h := in.Attributes.Request.HTTP; h.Method != "" || h.Path != "" {
		parts = append(parts, strings.TrimSpace(h.Method+" "+h.Path))
	}
	if id := in.SPIFFE.Source.ID; id != "" {
		parts = append(parts, "from "+id)
	} else {
		parts = append(parts, "from a caller without a SPIFFE ID")
	}
	if id := in.SPIFFE.Destination.ID; id != "" {
		parts = append(parts, "to "+id)
	}
	return strings.Join(parts, " ")
}

// printExplained is policy eval -explain's output: the decision as
// policy eval has it, then the explanation.
func printExplained(w io.Writer, r *authz.Result, x *authz.Explanation) {
	verdict := "denied"
	if r.Allowed {
		verdict = "allowed"
	}
	fmt.Fprintf(w, "decision %s: %s\n", r.ID, verdict)
	if r.Err != nil {
		fmt.Fprintf(w, "  error: %s\n", r.Err)
	}
	if x == nil {
		return
	}
	fmt.Fprintln(w, "explained with OPA's tracer:")
	printPolicyExplanation(w, x, nil)
}

// explainDecision is policy eval -explain after the decision r.
func explainDecision(cmd *cobra.Command, c config.Config, r *authz.Result) error {
	if r.Input == nil {
		printExplained(cmd.OutOrStdout(), r, nil)
		return nil
	}
	x, err := node.ExplainDecision(cmd.Context(), c, r.Input)
	if err != nil {
		return err
	}
	printExplained(cmd.OutOrStdout(), r, x)
	return nil
}
