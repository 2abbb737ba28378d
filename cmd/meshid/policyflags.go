package main

import (
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/spf13/cobra"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/cmd/meshid/internal/cli"
)

// The flags and arguments of the policy commands, which follow OPA's.

// checkRegoVersion refuses a --rego-version other than v1 and v0.
func checkRegoVersion(s string) error {
	if s != "v1" && s != "v0" {
		return fmt.Errorf("-rego-version %q: want v1 or v0", s)
	}
	return nil
}

// decisionFlag is --decision, the rule that decides.
func decisionFlag(cmd *cobra.Command, usage string) *string {
	p := cmd.Flags().String("decision", authz.DefaultDecision, "the `rule` that decides, as envoy/authz/allow or data.envoy.authz.allow ("+usage+")")
	_ = cmd.RegisterFlagCompletionFunc("decision", cobra.NoFileCompletions)
	return p
}

// decisionRef reads a decision the two ways OPA users write one: the path
// of OPA-Envoy's "path" setting (envoy/authz/allow) or a reference into
// data (data.envoy.authz.allow). It returns the reference, which is what
// authz.decision holds.
func decisionRef(s string) (string, error) {
	const want = "want a path such as envoy/authz/allow or a reference such as " + authz.DefaultDecision
	if strings.HasPrefix(s, "data.") || strings.HasPrefix(s, "data[") {
		ref, err := ast.ParseRef(s)
		if err != nil || !ref.HasPrefix(ast.DefaultRootRef) || !ref.IsGround() || len(ref) < 2 {
			return "", fmt.Errorf("decision %q: not a reference into data; %s", s, want)
		}
		return ref.String(), nil
	}
	if !strings.Contains(s, "/") {
		if ref, err := ast.ParseRef("data." + s); err == nil && ref.IsGround() && strings.Contains(s, ".") {
			return "", fmt.Errorf("decision %q: a reference starts at data: did you mean %s?", s, ref)
		}
		return "", fmt.Errorf("decision %q: %s", s, want)
	}
	segments := strings.Split(strings.TrimPrefix(s, "/"), "/")
	if segments[0] == "data" {
		return "", fmt.Errorf("decision %q: a path is relative to data: write %s", s, strings.Join(segments[1:], "/"))
	}
	ref := ast.DefaultRootRef.Copy()
	for _, seg := range segments {
		if seg == "" || strings.TrimSpace(seg) != seg {
			return "", fmt.Errorf("decision %q: empty or padded path segment; %s", s, want)
		}
		ref = ref.Append(ast.StringTerm(seg))
	}
	return ref.String(), nil
}

// oneDir is the one DIR argument of policy test and policy check.
func oneDir(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return cli.Usagef(cmd, "%s: want exactly one policy directory, got %d arguments", cli.CommandName(cmd), len(args))
	}
	return nil
}

func completeDirs(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return nil, cobra.ShellCompDirectiveFilterDirs
}
