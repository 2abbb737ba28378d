// Package policies holds the Rego policies shipped with meshid, under
// envoy/, and the Go tests that run their Rego unit tests and load them
// into the authz engine as meshid does. It has no Go API.
package policies
