// Package echo bounds what meshid repeats of a caller's input in errors and
// log lines. A request may carry megabytes of a name, a path or a message
// the caller chose; quoted whole, a hostile caller would have meshid write
// them into its own log and into the log of whatever reads its errors. So a
// string longer than its bound is cut at a character boundary and says how
// long it was: "spiffe://example.org/aaaa… (1048576 bytes)".
//
// It is a leaf any package may use: it imports nothing of meshid's, so
// parts that may import no other meshid part (sds, workload) use it too.
// It owns the cut and the note of the length, never the bound: each caller
// says how much of what it echoes is worth keeping.
package echo

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Clip is s cut to at most n bytes, followed by a note of its length when it
// was longer.
func Clip(s string, n int) string {
	head, note := cut(s, n)
	return head + note
}

// ClipAll clips each of ss to n bytes, for a log line listing them.
func ClipAll(ss []string, n int) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = Clip(s, n)
	}
	return out
}

// Quote is s quoted as %q would, cut to at most n bytes before quoting and
// followed by a note of its length when it was longer. Quoting may lengthen
// the part kept (a control byte is written \x00): n bounds what is taken
// from s, not what is written.
func Quote(s string, n int) string {
	head, note := cut(s, n)
	return strconv.Quote(head) + note
}

// cut splits a string longer than n bytes into its first n or fewer, ending
// at a character boundary, and a note of its length; a shorter one is whole
// and the note empty. A bound below zero keeps nothing.
func cut(s string, n int) (head, note string) {
	if len(s) <= n {
		return s, ""
	}
	n = max(n, 0)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n], fmt.Sprintf("… (%d bytes)", len(s))
}
