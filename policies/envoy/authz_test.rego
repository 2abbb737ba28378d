package envoy.authz_test

import data.envoy.authz

frontend := "spiffe://example.org/ns/demo/sa/frontend"

backend := "spiffe://example.org/ns/demo/sa/backend"

# hello is the input meshid builds for the frontend's GET /hello to the
# backend; the tests below change one thing at a time.
hello := {
	"attributes": {
		"source": {"principal": frontend},
		"destination": {"principal": backend},
		"request": {"http": {
			"method": "GET",
			"path": "/hello",
			"host": "backend",
			"headers": {":method": "GET", ":path": "/hello", ":authority": "backend"},
		}},
	},
	"parsed_path": ["hello"],
	"parsed_query": {},
	"parsed_body": null,
	"truncated_body": false,
	"source_principal": frontend,
	"version": {"ext_authz": "v3", "encoding": "protojson"},
	"spiffe": {
		"source": {
			"id": frontend,
			"trust_domain": "example.org",
			"path": "/ns/demo/sa/frontend",
			"segments": ["ns", "demo", "sa", "frontend"],
			"via": "mtls",
		},
		"destination": {
			"id": backend,
			"trust_domain": "example.org",
			"path": "/ns/demo/sa/backend",
			"segments": ["ns", "demo", "sa", "backend"],
		},
	},
}

with_path(path, segments) := object.union(hello, {
	"attributes": {"request": {"http": {"path": path}}},
	"parsed_path": segments,
})

with_source(id, trust_domain, path) := object.union(hello, {
	"attributes": {"source": {"principal": id}},
	"source_principal": id,
	"spiffe": {"source": {"id": id, "trust_domain": trust_domain, "path": path}},
})

test_frontend_may_get_hello if {
	authz.allow with input as hello
}

test_query_string_does_not_matter if {
	authz.allow with input as object.union(with_path("/hello?lang=fr", ["hello"]), {"parsed_query": {"lang": ["fr"]}})
}

test_other_path_denied if {
	not authz.allow with input as with_path("/admin", ["admin"])
}

test_sub_path_denied if {
	not authz.allow with input as with_path("/hello/x", ["hello", "x"])
}

test_trailing_slash_denied if {
	not authz.allow with input as with_path("/hello/", ["hello", ""])
}

test_other_method_denied if {
	every method in ["POST", "PUT", "DELETE", "HEAD", "get"] {
		not authz.allow with input as object.union(hello, {"attributes": {"request": {"http": {"method": method}}}})
	}
}

test_other_source_denied if {
	not authz.allow with input as with_source("spiffe://example.org/ns/demo/sa/admin", "example.org", "/ns/demo/sa/admin")
}

test_same_path_other_trust_domain_denied if {
	not authz.allow with input as with_source("spiffe://evil.example/ns/demo/sa/frontend", "evil.example", "/ns/demo/sa/frontend")
}

test_missing_source_denied if {
	not authz.allow with input as json.remove(hello, ["spiffe/source", "source_principal", "attributes/source"])
}

# A frontend name in a certificate subject is not an identity: only
# input.spiffe counts.
test_non_spiffe_principal_denied if {
	not authz.allow with input as object.union(json.remove(hello, ["spiffe/source"]), {
		"attributes": {"source": {"principal": "CN=frontend"}},
		"source_principal": "CN=frontend",
	})
}

test_other_destination_denied if {
	not authz.allow with input as object.union(hello, {"spiffe": {"destination": {"id": "spiffe://example.org/ns/demo/sa/db"}}})
}
