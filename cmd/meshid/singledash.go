package main

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
)

// longFlags rewrites the single-dash long flags of args (-config F, -json,
// -write=DIR) as pflag spells them (--config F, --json, --write=DIR), so
// that scripts, SPIRE users and the end-to-end tests can keep typing them.
// Only a name that is a long flag of cmd, the command args run, is
// rewritten: -v, -i, -d and clusters such as -vd stay shorthands, and
// anything else is left for pflag to refuse. A flag's value is never
// rewritten, nor is anything after "--". A cli.RestFlag, however spelt, ends
// the flags: it becomes "--" and what follows it passes as it is.
func longFlags(cmd *cobra.Command, args []string) []string {
	cmd.InitDefaultHelpFlag()
	cmd.InitDefaultVersionFlag()
	flags := cmd.Flags()
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return append(out, args[i:]...)
		}
		if len(a) < 2 || a[0] != '-' {
			out = append(out, a)
			continue
		}
		doubled := strings.HasPrefix(a, "--")
		body := strings.TrimPrefix(a[1:], "-")
		flagName, _, inline := strings.Cut(body, "=")
		var f *pflag.Flag
		if doubled || len(flagName) > 1 {
			f = flags.Lookup(flagName)
		}
		switch {
		case f != nil:
			if _, rest := f.Annotations[cli.RestFlag]; rest && !inline {
				return append(append(out, "--"), args[i+1:]...)
			}
			out = append(out, "--"+body)
			if !inline && f.NoOptDefVal == "" && i+1 < len(args) {
				i++
				out = append(out, args[i])
			}
		case !doubled:
			out = append(out, a)
			if lastShorthandWantsValue(flags, body) && i+1 < len(args) {
				i++
				out = append(out, args[i])
			}
		default:
			out = append(out, a)
		}
	}
	return out
}

// lastShorthandWantsValue says whether the shorthands of one argument
// (-vd) end with a flag whose value is the next argument, as pflag
// reads them.
func lastShorthandWantsValue(flags *pflag.FlagSet, shorthands string) bool {
	for i := 0; i < len(shorthands); i++ {
		if i+1 < len(shorthands) && shorthands[i+1] == '=' {
			return false
		}
		f := flags.ShorthandLookup(shorthands[i : i+1])
		if f == nil {
			return false
		}
		if f.NoOptDefVal == "" {
			return i == len(shorthands)-1
		}
	}
	return false
}
