package main

import (
	"github.com/spf13/cobra"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/node"
)

// newRunCmd is `meshid run`: the node daemon, until it is signalled.
func newRunCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run [--config meshid.yaml]",
		Short: "Run the node daemon",
		Long: `Run the node daemon until SIGINT or SIGTERM: the CA, the SDS and Workload
API servers on socket_path, the ext_authz servers and the admin endpoint,
as meshid.yaml says. Without --config, built-in demo settings in the
current directory. Any error in the configuration, the entries or the
policies stops it before it serves.`,
		Example: `  meshid run --config /etc/meshid/meshid.yaml
  meshid run -config meshid.yaml`,
		GroupID:           nodeGroup,
		Args:              cli.NoArgs,
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	configPath := cli.ConfigFlag(cmd, "path to meshid.yaml (default: built-in demo settings in the current directory)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := node.LoadConfig(*configPath)
		if err != nil {
			return err
		}
		log, err := node.NewLogger(cfg.Log, cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		n, err := node.New(cmd.Context(), cfg, log)
		if err != nil {
			return err
		}
		return n.Run(cmd.Context())
	}
	return cmd
}
