// Package authz answers Envoy's ext_authz v3 Check calls by evaluating Rego
// policies written for the OPA-Envoy plugin.
//
// It owns the Check server, the input document (OPA-Envoy's, plus meshid's
// input.spiffe) and the Rego engine. It never identifies callers itself: the
// caller is whoever Envoy says it is in source.principal, which Envoy took
// from the mTLS peer certificate. It never issues identities either.
//
// Every failure to reach a decision is a deny: Envoy may be configured to let
// requests through when the authorization service errors, so this package
// never answers Check with an error.
package authz
