// Package authz answers Envoy's ext_authz Check calls (gRPC, and the HTTP
// protocol) by evaluating Rego policies written for the OPA-Envoy plugin.
//
// It owns the Rego engine and its hot reload, the Server that takes each
// request from its input document (package input) through the policy to
// the CheckResponse its decision maps to (package response) and hands
// the decision to the decision log (package decisionlog), decision ids
// and the metrics. It never builds the input document or writes a
// decision log line itself, and never identifies callers: the caller is
// whoever Envoy says it is in source.principal (the mTLS peer it
// verified), or an x-forwarded-client-cert or JWT-SVID input was told to
// trust. It never
// issues identities either, and imports no meshid package outside authz:
// JWT bundles and metrics registries come in through Options.
//
// Every failure to reach a decision is a deny: Envoy may be configured to
// let requests through when the authorization service errors, so this
// package never answers Check with an error.
package authz
