# The demo mesh's authorization policy. meshid's ext_authz server evaluates
# data.envoy.authz.allow for every request Envoy checks, with the input
# document of the OPA-Envoy plugin plus input.spiffe (see docs/authz.md).
package envoy.authz

# Anything not allowed below is denied: a request nobody thought about
# should fail, not pass.
default allow := false

# The frontend may read the backend's greeting, and nothing else.
#
# Identities are compared as whole SPIFFE IDs, trust domain included, so a
# workload of another trust domain with the same path gets nothing. They
# come from input.spiffe, which meshid fills only from the principal Envoy
# verified on the mTLS connection; a request without one is denied here.
#
# The path is matched on parsed_path, the decoded segments without the
# query string: the query does not change which resource is read, while
# "/hello/", "/hello/x" or "/Hello" are other resources and stay denied.
allow if {
	input.spiffe.source.id == "spiffe://example.org/ns/demo/sa/frontend"
	input.spiffe.destination.id == "spiffe://example.org/ns/demo/sa/backend"
	input.attributes.request.http.method == "GET"
	input.parsed_path == ["hello"]
}
