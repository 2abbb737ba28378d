package main

import (
	"io"
)

// parseWatchFlags reads svid watch's command line as the command does,
// single-dash flags and -cmd included.
func parseWatchFlags(args []string, stderr io.Writer) (watchConfig, error) {
	cmd, f := svidWatchCmd()
	cmd.SetErr(stderr)
	if err := cmd.ParseFlags(longFlags(cmd, args)); err != nil {
		return watchConfig{}, err
	}
	return f.config(cmd, cmd.Flags().Args())
}
