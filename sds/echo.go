package sds

// What a caller sends is repeated in errors and log lines only in part (see
// internal/echo): a request may carry megabytes, and a hostile caller would
// have meshid write them into Envoy's log and its own. maxEcho bounds a name
// or a type URL; maxEchoDetail an Envoy's NACK message, which is worth more
// of its length.
const (
	maxEcho       = 256
	maxEchoDetail = 1024
)
