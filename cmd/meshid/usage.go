package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meshid/meshid/cmd/meshid/internal/cli"
)

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
			err = fmt.Errorf("%w%s", err, cli.DidYouMean([]string{"--" + near}))
		}
	}
	return cli.Usage(cmd, err)
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
