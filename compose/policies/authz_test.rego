package envoy.authz_test

import data.envoy.authz

id(service) := concat("", ["spiffe://example.org/compose/", service])

call(from, to) := {"spiffe": {"source": {"id": id(from)}, "destination": {"id": id(to)}}}

test_web_calls_api if authz.allow with input as call("web", "api")

test_api_calls_db if authz.allow with input as call("api", "db")

test_web_may_not_call_db if not authz.allow with input as call("web", "db")

test_db_may_not_call_back if not authz.allow with input as call("db", "api")

test_no_caller_no_entry if not authz.allow with input as {"spiffe": {"destination": {"id": id("api")}}}

test_other_trust_domain if not authz.allow with input as {"spiffe": {
	"source": {"id": "spiffe://evil.example/compose/web"},
	"destination": {"id": id("api")},
}}
