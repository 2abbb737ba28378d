package cli

import (
	"encoding/json"
	"io"
	"time"

	"github.com/spf13/cobra"
)

// The flags several commands share are declared here, once, so that they
// are spelt and explained alike everywhere.

// RestFlag annotates a flag after which the rest of the command line is
// not meshid's: svid watch's --cmd PROG ARGS...
const RestFlag = "meshid_rest"

// SocketFlag is --socket, meshid's socket.
func SocketFlag(cmd *cobra.Command, p *string, value, usage string) {
	cmd.Flags().StringVar(p, "socket", value, usage)
}

// TimeoutFlag is --timeout.
func TimeoutFlag(cmd *cobra.Command, p *time.Duration, value time.Duration, usage string) {
	cmd.Flags().DurationVar(p, "timeout", value, usage)
}

// ConfigFlag is --config, a meshid.yaml.
func ConfigFlag(cmd *cobra.Command, usage string) *string {
	p := cmd.Flags().String("config", "", usage)
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
	return p
}

// RegoVersionFlag is --rego-version, which every policy command takes.
func RegoVersionFlag(cmd *cobra.Command) *string {
	p := cmd.Flags().String("rego-version", "v1", "Rego version of the policies: v1, or v0 for policies written before OPA 1.0 (authz.rego_version)")
	_ = cmd.RegisterFlagCompletionFunc("rego-version", cobra.FixedCompletions([]string{"v1", "v0"}, cobra.ShellCompDirectiveNoFileComp))
	return p
}

// JSONFlag is --json, the output format for scripts (WriteJSON).
func JSONFlag(cmd *cobra.Command, what string) *bool {
	return cmd.Flags().Bool("json", false, "print "+what+" as JSON")
}

// WriteJSON prints v as --json does: indented, one document.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
