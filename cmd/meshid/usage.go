package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// usageError is a command line meshid cannot run as typed: an unknown
// command or flag, a flag value outside its choices, a missing or extra
// argument. meshid exits 2 and points at the command's help.
type usageError struct {
	cmd       string // "meshid svid fetch"
	err       error
	helpShown bool // the help is on stderr already
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usage(cmd *cobra.Command, err error) error {
	return &usageError{cmd: cmd.CommandPath(), err: err}
}

func usagef(cmd *cobra.Command, format string, args ...any) error {
	return usage(cmd, fmt.Errorf(format, args...))
}

// commandName is a command as meshid's messages call it: "svid fetch".
func commandName(cmd *cobra.Command) string {
	return strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
}

// needsCommand is what meshid and its groups do alone: show their help
// and fail, as a command line with a word missing.
func needsCommand(cmd *cobra.Command, _ []string) error {
	cmd.SetOut(cmd.ErrOrStderr())
	if err := cmd.Help(); err != nil {
		return err
	}
	msg := "a command is required"
	if cmd.HasParent() {
		msg = commandName(cmd) + ": " + msg
	}
	return &usageError{cmd: cmd.CommandPath(), err: errors.New(msg), helpShown: true}
}

// subcommandArgs refuses a word after a group that names none of its
// commands, as cobra refuses one after the root.
func subcommandArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	return usagef(cmd, "unknown command %q for %q%s", args[0], cmd.CommandPath(), didYouMean(cmd.SuggestionsFor(args[0])))
}

// noArgs refuses positional arguments.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef(cmd, "%s: unexpected argument %q", commandName(cmd), args[0])
	}
	return nil
}

// flagError makes pflag's complaints usage errors, and suggests the flag
// an unknown one was probably meant to be.
func flagError(cmd *cobra.Command, err error) error {
	var unknown *pflag.NotExistError
	if errors.As(err, &unknown) {
		typed := unknown.GetSpecifiedName()
		// -sokcet is parsed as shorthands; it was meant as one name.
		if s := unknown.GetSpecifiedShortnames(); len(s) > 1 {
			typed, _, _ = strings.Cut(s, "=")
		}
		if near := nearestFlag(cmd.Flags(), typed); near != "" {
			err = fmt.Errorf("%w%s", err, didYouMean([]string{"--" + near}))
		}
	}
	return usage(cmd, err)
}

func didYouMean(suggestions []string) string {
	if len(suggestions) == 0 {
		return ""
	}
	return "\n\nDid you mean this?\n\t" + strings.Join(suggestions, "\n\t") + "\n"
}

// nearestFlag is the visible long flag of flags closest to typed: within
// two edits, or one that typed begins.
func nearestFlag(flags *pflag.FlagSet, typed string) string {
	best, bestDist := "", 3
	flags.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		d := editDistance(strings.ToLower(typed), f.Name)
		if len(typed) >= 3 && strings.HasPrefix(f.Name, typed) {
			d = 1
		}
		if d < bestDist {
			best, bestDist = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
