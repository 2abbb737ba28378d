// Package cli is what every meshid command shares: the usage errors that
// make meshid exit 2 and point at a command's help, the exit status of a
// program svid watch ran, groups of commands, the flags several commands
// take (spelt and explained alike everywhere) and JSON output. It builds
// no command tree and runs nothing: cmd/meshid assembles the tree, and
// its dispatch turns these errors into messages and exit statuses.
package cli

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// UsageError is a command line meshid cannot run as typed: an unknown
// command or flag, a flag value outside its choices, a missing or extra
// argument. meshid exits 2 and points at the command's help.
type UsageError struct {
	Cmd       string // "meshid svid fetch"
	Err       error
	HelpShown bool // the help is on stderr already
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usage makes err a usage error of cmd.
func Usage(cmd *cobra.Command, err error) error {
	return &UsageError{Cmd: cmd.CommandPath(), Err: err}
}

// Usagef is Usage with a message formatted as fmt.Errorf does.
func Usagef(cmd *cobra.Command, format string, args ...any) error {
	return Usage(cmd, fmt.Errorf(format, args...))
}

// ExitCode is the status of the program svid watch supervised, which
// meshid exits with.
type ExitCode int

func (c ExitCode) Error() string { return fmt.Sprintf("the program exited with status %d", int(c)) }

// CommandName is a command as meshid's messages call it: "svid fetch".
func CommandName(cmd *cobra.Command) string {
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// Group is a command that holds others. Alone it shows its help and
// fails; an unknown word after it is refused with a suggestion.
func Group(name, groupID, short, long, example string, cmds ...*cobra.Command) *cobra.Command {
	g := &cobra.Command{
		Use:                        name,
		GroupID:                    groupID,
		Short:                      short,
		Long:                       long,
		Example:                    example,
		Args:                       subcommandArgs,
		RunE:                       NeedsCommand,
		SuggestionsMinimumDistance: 2,
	}
	g.AddCommand(cmds...)
	return g
}

// NeedsCommand is what meshid and its groups do alone: show their help
// and fail, as a command line with a word missing.
func NeedsCommand(cmd *cobra.Command, _ []string) error {
	cmd.SetOut(cmd.ErrOrStderr())
	if err := cmd.Help(); err != nil {
		return err
	}
	msg := "a command is required"
	if cmd.HasParent() {
		msg = CommandName(cmd) + ": " + msg
	}
	return &UsageError{Cmd: cmd.CommandPath(), Err: errors.New(msg), HelpShown: true}
}

// subcommandArgs refuses a word after a group that names none of its
// commands, as cobra refuses one after the root.
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	return Usagef(cmd, "unknown command %q for %q%s", args[0], cmd.CommandPath(), DidYouMean(cmd.SuggestionsFor(args[0])))
}

// NoArgs refuses positional arguments.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return Usagef(cmd, "%s: unexpected argument %q", CommandName(cmd), args[0])
	}
	return nil
}

// DidYouMean is the end of a message that suggests what was meant, as
// cobra words it; empty without suggestions.
func DidYouMean(suggestions []string) string {
	if len(suggestions) == 0 {
		return ""
	}
	return "\n\nDid you mean this?\n\t" + strings.Join(suggestions, "\n\t") + "\n"
}
