package sds

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// What a caller sends is repeated in errors and log lines only in part: a
// request may carry megabytes, and a hostile caller would have meshid write
// them into Envoy's log and its own. maxEcho bounds a name or a type URL;
// maxEchoDetail an Envoy's NACK message, which is worth more of its length.
const (
	maxEcho       = 256
	maxEchoDetail = 1024
)

// quote is s quoted as %q would, cut to maxEcho bytes first.
func quote(s string) string {
	head, rest := cut(s, maxEcho)
	if rest == "" {
		return strconv.Quote(s)
	}
	return strconv.Quote(head) + rest
}

// clip is s cut to at most n bytes, saying how long it was.
func clip(s string, n int) string {
	head, rest := cut(s, n)
	return head + rest
}

// clipAll clips names for a log line.
func clipAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = clip(n, maxEcho)
	}
	return out
}

// cut splits a string longer than n bytes into its first n or fewer (at a
// character boundary) and a note of its length; a shorter one is whole.
func cut(s string, n int) (head, note string) {
	if len(s) <= n {
		return s, ""
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n], fmt.Sprintf("… (%d bytes)", len(s))
}
