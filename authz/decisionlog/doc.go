// Package decisionlog writes authz decisions as JSON lines, the fields of
// OPA's decision log events that apply, so the same tools read both, and
// ships them to a collector as OPA's decision log events.
//
// It owns the Record of one decision as it is logged, the queue between
// the Checks that add records and the one goroutine that writes them
// (dropping and counting when it is full, sampling), what a line may
// hold (masked request headers, every string and the input capped, with
// markers giving the original size), the File a log is written to,
// rotated by size without ever splitting a line, and the Shipper that
// batches the same decisions, gzipped, to a collector written for OPA,
// from a bounded buffer, retrying with backoff. It never decides: the
// server reaches the decision and fills the Record; of meshid's packages
// it imports only leaves (internal/atomicfile, internal/logpace), and the
// collector's HTTP client is the caller's (RESTCollector takes OPA's).
package decisionlog
