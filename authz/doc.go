// Package authz answers Envoy's ext_authz Check calls (gRPC, and the HTTP
// protocol) by evaluating Rego policies written for the OPA-Envoy plugin.
//
// It owns the input document (OPA-Envoy's, built as an ast.Value straight
// from the proto, plus meshid's input.spiffe), the Rego engine and its
// hot reload, the mapping of decisions to CheckResponses, decision ids and
// the decision log. It never identifies callers itself: the caller is
// whoever Envoy says it is in source.principal (the mTLS peer it
// verified), or an x-forwarded-client-cert or JWT-SVID it was told to
// trust. It never issues identities either, and imports no other meshid
// package: JWT bundles and metrics registries come in through Options.
//
// Every failure to reach a decision is a deny: Envoy may be configured to
// let requests through when the authorization service errors, so this
// package never answers Check with an error.
package authz
