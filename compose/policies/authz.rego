# The compose mesh's authorization policy: web may call api, api may call
# db, and nothing else passes (web → db is denied). meshid evaluates
# data.envoy.authz.allow for every request a sidecar's inbound listener
# checks; input.spiffe.source is the caller's SPIFFE ID from the mTLS
# connection its sidecar verified, input.spiffe.destination the callee's.
package envoy.authz

default allow := false

# callers[callee] is the set of services that may call it.
callers := {
	"api": {"web"},
	"db": {"api"},
}

prefix := "spiffe://example.org/compose/"

allow if {
	callee := trim_prefix(input.spiffe.destination.id, prefix)
	caller := trim_prefix(input.spiffe.source.id, prefix)
	startswith(input.spiffe.destination.id, prefix)
	startswith(input.spiffe.source.id, prefix)
	caller in callers[callee]
}
