package main

import (
	"context"
	"flag"
	"io"

	"github.com/meshid/meshid/node"
)

// run is `meshid run`: the node daemon, until ctx ends.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	flags := flag.NewFlagSet("run", flag.ContinueOnError)
	flags.SetOutput(stderr)
	configPath := flags.String("config", "", "path to meshid.yaml (default: built-in demo settings in the current directory)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	cfg, err := node.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	log, err := node.NewLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	n, err := node.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}
