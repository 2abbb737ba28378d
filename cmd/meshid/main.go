// Command meshid is the node daemon and its command-line tools. Its
// commands parse flags, hand the work to the package that owns it (node
// builds and runs the daemon, decides a request as the daemon would; authz
// runs policy tests) and print the outcome. This package holds the root,
// dispatch and exit statuses, the single-dash spelling of long flags, and
// the node and operator commands; the Workload API client commands are
// package workloadcli's, and what every command shares is package cli's.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/cmd/meshid/internal/workloadcli"
	"github.com/meshid/meshid/internal/buildinfo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	report(os.Stderr, err)
	os.Exit(exitStatus(err))
}

// dispatch runs the command args name, as main does. What it returns
// becomes the message (report) and the exit status (exitStatus).
func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRootCmd(stdout, stderr)
	// The shell's completion requests (meshid __complete ...) are cobra's
	// own command and parse nothing of ours.
	if len(args) == 0 || (args[0] != cobra.ShellCompRequestCmd && args[0] != cobra.ShellCompNoDescRequestCmd) {
		cmd, _, err := root.Find(args)
		if err != nil {
			return cli.Usage(cmd, err)
		}
		args = longFlags(cmd, args)
	}
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// exitStatus is 0 for success, 2 for a command line meshid cannot run as
// typed, the managed program's status for svid watch, and 1 for every
// other failure.
func exitStatus(err error) int {
	var u *cli.UsageError
	var code cli.ExitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &u):
		return 2
	case errors.As(err, &code):
		return int(code)
	}
	return 1
}

// report tells the user why meshid failed.
func report(w io.Writer, err error) {
	var u *cli.UsageError
	var code cli.ExitCode
	switch {
	case err == nil, errors.As(err, &code): // the program has said why
	case errors.As(err, &u) && !u.HelpShown:
		fmt.Fprintf(w, "meshid: %v\nRun '%s --help' for usage.\n", err, u.Cmd)
	default:
		fmt.Fprintln(w, "meshid:", err)
	}
}

const (
	nodeGroup     = "node"
	workloadGroup = "workload"
)

// newRootCmd is meshid's command tree, printing to stdout and stderr.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "meshid",
		Short: "SPIFFE workload identity and authorization for Envoy meshes",
		Long: `meshid: SPIFFE workload identity and authorization for Envoy meshes.

"meshid run" is the node daemon: it issues X509- and JWT-SVIDs to the
processes that call on its Unix socket (Envoy over SDS, others over the
SPIFFE Workload API) and answers Envoy's ext_authz with Rego policies. The
other commands set up and check a node, its policies and entries, or ask
the daemon for this process's identity.

Flags are spelt --name (-name works too); flags may follow arguments.`,
		Example: `  meshid run --config /etc/meshid/meshid.yaml
  meshid policy test policies/ -v
  meshid svid fetch --socket unix:///run/meshid/agent.sock
  meshid completion bash > /etc/bash_completion.d/meshid`,
		Version:                    buildinfo.Read().Version,
		SilenceErrors:              true,
		SilenceUsage:               true,
		SuggestionsMinimumDistance: 2,
		// Alone, meshid says what it can do; an unknown word is refused
		// with a suggestion by cobra's own check of the root.
		RunE: cli.NeedsCommand,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	// --version prints what "meshid version" does, not cobra's one line.
	root.SetVersionTemplate(buildinfo.Read().String())
	root.SetFlagErrorFunc(flagError)
	root.AddGroup(
		&cobra.Group{ID: nodeGroup, Title: "Node and operator commands:"},
		&cobra.Group{ID: workloadGroup, Title: "Workload commands (they ask meshid on its socket):"},
	)
	root.AddCommand(
		newRunCmd(),
		cli.Group("envoy", nodeGroup, "Envoy sidecar configuration that uses meshid",
			`Generate the static configuration of Envoy sidecars that take their
certificates and trust bundles from meshid over SDS and ask meshid's
ext_authz about each request.`,
			`  meshid envoy bootstrap --spiffe-id spiffe://example.org/ns/demo/sa/backend \
      --inbound 127.0.0.1:8443 --app 127.0.0.1:8080`,
			newEnvoyBootstrapCmd()),
		cli.Group("ca", nodeGroup, "Certificate authorities for meshid nodes",
			`Issue the CA material a node's ca.upstream takes, so that nodes with
intermediates of one root trust each other's SVIDs.`,
			`  meshid ca mint-intermediate --root-cert root.crt --root-key root.key \
      --trust-domain example.org --out node-a/`,
			newCAMintIntermediateCmd()),
		cli.Group("policy", nodeGroup, "Test, check, evaluate and bundle Rego policies as meshid runs them",
			`Work with a policy directory (authz.policy_dir) as "meshid run" loads it:
run its Rego unit tests, compile it, decide one request with it, or write
it as an OPA bundle for a bundle service (authz.bundles). The flags follow
OPA's: -d for the policy directory, -i for the input, the decision as
envoy/authz/allow or data.envoy.authz.allow.`,
			`  meshid policy test policies/ -v
  meshid policy check policies/
  meshid policy eval -i check.json -d policies/ envoy/authz/allow
  meshid policy build policies/ -o bundle.tar.gz --signing-key signing.pem`,
			newPolicyTestCmd(), newPolicyEvalCmd(), newPolicyCheckCmd(), newPolicyWhyCmd(), newPolicyBuildCmd()),
		cli.Group("entry", nodeGroup, "Check entries and explain which one a process matches",
			`Lint an entries file for what meshid refuses and what other workloads
could claim, or ask the running daemon which entries a process matches.`,
			`  meshid entry lint --config /etc/meshid/meshid.yaml
  meshid entry explain --pid 4242`,
			newEntryLintCmd(), newEntryExplainCmd()),
		newStatusCmd(),
		newVersionCmd(),
	)
	workloadcli.Add(root, workloadGroup)
	root.SetHelpCommand(newHelpCmd())
	// Part of the tree from the start, so that Find, help and the tests
	// see them as the shell does. The completion scripts go to stdout as
	// it is now.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version",
		Long: `Print meshid's version, the commit it was built from and the Go toolchain
and platform it was built for, as "meshid --version" does. The version is
the one make build or make dist stamped (git describe), or the module
version of "go install github.com/meshid/meshid/cmd/meshid@VERSION", or
"dev"; the commit is the stamped one or Go's record of the checkout
("-dirty" when it had changes), or "unknown".`,
		Example:           "  meshid version",
		Args:              cli.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := io.WriteString(cmd.OutOrStdout(), buildinfo.Read().String())
			return err
		},
	}
}

// newHelpCmd is "meshid help CMD": CMD's help, or a usage error for a
// command meshid does not have.
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [command]",
		Short: "Help about any command",
		Long:  `Print the help of any command: "meshid help svid watch" is "meshid svid watch --help".`,
		Example: `  meshid help
  meshid help policy eval`,
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			cmd, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []cobra.Completion
			for _, sub := range cmd.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					names = append(names, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			cmd, rest, err := c.Root().Find(args)
			if err != nil {
				return cli.Usage(c, err)
			}
			if len(rest) > 0 {
				return cli.Usagef(c, "no help for %q: %q has no command %q%s", strings.Join(args, " "), cmd.CommandPath(), rest[0], cli.DidYouMean(cmd.SuggestionsFor(rest[0])))
			}
			cmd.InitDefaultHelpFlag()
			cmd.InitDefaultVersionFlag()
			return cmd.Help()
		},
	}
}
