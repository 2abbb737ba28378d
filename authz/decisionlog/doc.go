// Package decisionlog writes authz decisions as JSON lines, the fields of
// OPA's decision log events that apply, so the same tools read both.
//
// It owns the Record of one decision as it is logged, the queue between
// the Checks that add records and the one goroutine that writes them
// (dropping and counting when it is full, sampling), what a line may
// hold (masked request headers, every string and the input capped, with
// markers giving the original size), and the File a log is written to,
// rotated by size without ever splitting a line. It never decides: the
// server reaches the decision and fills the Record, and this package
// imports no other meshid package.
package decisionlog
