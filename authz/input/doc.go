// Package input builds the document a Rego policy sees as input for an
// Envoy ext_authz CheckRequest: OPA-Envoy's (attributes, parsed_path,
// parsed_query, parsed_body, truncated_body, source_principal, version) as
// an ast.Value, and meshid's input.spiffe, the caller and the callee as
// SPIFFE IDs with the JWT-SVID the request carries.
//
// It owns everything that turns a request into that document: the
// attributes, the request bodies (JSON, forms, multipart, and gRPC
// through proto descriptor sets, parsed by internal/bodyterm) within the
// limits on their size and shape its Options set and by a deadline, since
// their senders choose both, the x-forwarded-client-cert and JWT-SVID
// checks, and the caches of terms that recur across requests. It never evaluates a policy or answers
// Envoy: a request it cannot describe faithfully is an error for its
// caller to deny. It never identifies callers itself (the caller is the
// mTLS peer Envoy verified, or what a header it is told to trust says),
// and imports no meshid package outside its own: JWT bundles come in
// through Options.
package input
