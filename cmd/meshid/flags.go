package main

import (
	"errors"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/meshid/meshid/internal/endpoint"
)

// The flags several commands share are declared here, once, so that they
// are spelt and explained alike everywhere.

// clientFlags are --socket and --timeout, which every command that asks
// meshid on its socket takes.
type clientFlags struct {
	socket  string
	timeout time.Duration
}

func addClientFlags(cmd *cobra.Command) *clientFlags {
	f := &clientFlags{}
	socketFlag(cmd, &f.socket, "", "meshid's Workload API socket, a `path` or unix:///path (default: $"+
		workloadapi.SocketEnv+", else "+endpoint.Default+")")
	timeoutFlag(cmd, &f.timeout, 10*time.Second, "how long to wait for meshid's answer")
	return f
}

func socketFlag(cmd *cobra.Command, p *string, value, usage string) {
	cmd.Flags().StringVar(p, "socket", value, usage)
}

func timeoutFlag(cmd *cobra.Command, p *time.Duration, value time.Duration, usage string) {
	cmd.Flags().DurationVar(p, "timeout", value, usage)
}

// configFlag is --config, a meshid.yaml.
func configFlag(cmd *cobra.Command, usage string) *string {
	p := cmd.Flags().String("config", "", usage)
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
	return p
}

// regoVersionFlag is --rego-version, which every policy command takes.
func regoVersionFlag(cmd *cobra.Command) *string {
	p := cmd.Flags().String("rego-version", "v1", "Rego version of the policies: v1, or v0 for policies written before OPA 1.0 (authz.rego_version)")
	_ = cmd.RegisterFlagCompletionFunc("rego-version", cobra.FixedCompletions([]string{"v1", "v0"}, cobra.ShellCompDirectiveNoFileComp))
	return p
}

// jsonFlag is --json, the output format for scripts.
func jsonFlag(cmd *cobra.Command, what string) *bool {
	return cmd.Flags().Bool("json", false, "print "+what+" as JSON")
}

// audiences is a repeatable --audience flag.
type audiences []string

func (a *audiences) String() string { return strings.Join(*a, ",") }
func (a *audiences) Type() string   { return "audience" }
func (a *audiences) Set(v string) error {
	if v == "" {
		return errors.New("empty audience")
	}
	*a = append(*a, v)
	return nil
}
