package workload

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// What a caller sends is repeated in errors only in part: a request may
// carry megabytes, and meshid would hand them back to be logged. maxEcho
// bounds an audience or a SPIFFE ID; maxEchoDetail a message of go-spiffe's,
// which quotes the audiences it compared.
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
