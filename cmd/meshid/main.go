// Command meshid is the node daemon and its command-line tools. This is the
// only package that wires meshid's parts together.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `meshid: SPIFFE workload identity and authorization for Envoy meshes.

Usage:
  meshid run [-config meshid.yaml]   run the node daemon
  meshid envoy bootstrap [flags]     print an Envoy sidecar bootstrap that uses meshid
  meshid ca mint-intermediate [...]  issue a node's intermediate CA from a root
  meshid policy test DIR             run the Rego unit tests of a policy directory
  meshid policy eval -input F [...]  decide one CheckRequest (proto-JSON) with the policies
  meshid policy check DIR            compile a policy directory; errors as file:line:col
  meshid entry lint [-entries FILE]  check entries for what meshid refuses and what others could claim
  meshid entry explain -pid N        show what meshid sees of a process and which entries match
  meshid svid fetch [-write DIR]     print (and write) this process's X509-SVIDs from the Workload API
  meshid svid watch -write DIR [...] keep SVID files fresh, signal or run the program that reads them
  meshid jwt fetch -audience A       print a JWT-SVID for this process
  meshid jwt validate -audience A T  validate JWT-SVID T with meshid
  meshid bundle show [-format F]     print the trust bundles (pem or jwks)
  meshid healthcheck                 check meshid serves and this process's SVID rotates
  meshid version                     print the version

Run "meshid <command> -h" for a command's flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "meshid:", err)
		os.Exit(1)
	}
}

// subcommands are the two-word commands; each parses its own flags.
var subcommands = map[string]func(args []string, stdout, stderr io.Writer) error{
	"envoy bootstrap":      envoyBootstrap,
	"ca mint-intermediate": caMintIntermediate,
	"policy test":          policyTest,
	"policy eval":          policyEval,
	"policy check":         policyCheck,
	"entry lint":           entryLint,
	"entry explain":        entryExplain,
	"svid fetch":           svidFetch,
	"svid watch":           svidWatch,
	"jwt fetch":            jwtFetch,
	"jwt validate":         jwtValidate,
	"bundle show":          bundleShow,
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "run":
		return run(ctx, args[1:], stderr)
	case "envoy", "ca", "policy", "entry", "svid", "jwt", "bundle":
		if len(args) >= 2 {
			if cmd, ok := subcommands[args[0]+" "+args[1]]; ok {
				return cmd(args[2:], stdout, stderr)
			}
		}
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", strings.Join(args, " "))
	case "healthcheck":
		return healthcheck(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "meshid", version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}
