package input

// CanonicalJSON lends the internal tests' JSON canonicalizer to the
// external ones (package input_test).
var CanonicalJSON = canonical
