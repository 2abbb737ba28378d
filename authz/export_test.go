package authz

// CanonicalJSON lends the internal tests' JSON canonicalizer to the
// external ones (package authz_test).
var CanonicalJSON = canonical
