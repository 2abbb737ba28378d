package authz_test

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/test/authztest"
)

// helloTests test authztest.HelloPolicy; test_get needs data.methods, the
// data document beside the policy.
const helloTests = `package envoy.authz_test

import data.envoy.authz

test_get if authz.allow with input as {"attributes": {"request": {"http": {"method": "GET"}}}, "parsed_path": ["hello"]}

test_post_denied if not authz.allow with input as {"attributes": {"request": {"http": {"method": "POST"}}}, "parsed_path": ["hello"]}
`

// slowTest takes seconds: far past a test's time limit of 50ms.
const slowTest = `package envoy.authz_test

test_slow if {
	some i in numbers.range(1, 2000)
	some j in numbers.range(1, 2000)
	i == j + 2000
}
`

func TestTestPolicies(t *testing.T) {
	hello := map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData, "authz_test.rego": helloTests}
	with := func(files, more map[string]string) string {
		all := maps.Clone(files)
		maps.Copy(all, more)
		return authztest.PolicyDir(t, all)
	}
	tests := []struct {
		name    string
		dir     string
		opts    authz.TestOptions
		want    map[string]bool // test name → passed
		wantErr string
	}{
		{name: "passing, with the data documents", dir: with(hello, nil),
			want: map[string]bool{"test_get": true, "test_post_denied": true}},
		{name: "a failing test", dir: with(hello, map[string]string{"more_test.rego": "package envoy.authz_test\n\nimport data.envoy.authz\n\ntest_post_allowed if authz.allow with input as {\"attributes\": {\"request\": {\"http\": {\"method\": \"POST\"}}}, \"parsed_path\": [\"hello\"]}\n"}),
			want: map[string]bool{"test_get": true, "test_post_denied": true, "test_post_allowed": false}},
		{name: "filtered by full name", dir: with(hello, nil), opts: authz.TestOptions{Run: `data\.envoy\.authz_test\.test_get`},
			want: map[string]bool{"test_get": true}},
		{name: "no tests", dir: with(map[string]string{"authz.rego": authztest.HelloPolicy}, nil), want: map[string]bool{}},
		{name: "v0 policies as v0", dir: with(map[string]string{"authz.rego": "package envoy.authz\n\ndefault allow = false\n\nallow { input.parsed_path[0] == \"hello\" }\n",
			"authz_test.rego": "package envoy.authz_test\n\ntest_hello { data.envoy.authz.allow with input as {\"parsed_path\": [\"hello\"]} }\n"}, nil),
			opts: authz.TestOptions{RegoV0: true}, want: map[string]bool{"test_hello": true}},
		{name: "a slow test times out", dir: with(map[string]string{"authz.rego": authztest.HelloPolicy, "slow_test.rego": slowTest}, nil),
			opts: authz.TestOptions{Timeout: 50 * time.Millisecond}, want: map[string]bool{"test_slow": false}},
		{name: "a test that does not parse", dir: with(hello, map[string]string{"bad_test.rego": "package envoy.authz_test\n\ntest_x if {\n"}), wantErr: "bad_test.rego:4:0: rego_parse_error"},
		{name: "a test that does not compile", dir: with(hello, map[string]string{"bad_test.rego": "package envoy.authz_test\n\ntest_x if data.envoy.authz.allow == y\n"}),
			wantErr: "do not compile with their tests"},
		{name: "v0 policies as v1", dir: with(map[string]string{"authz.rego": "package envoy.authz\n\nallow { true }\n"}, nil), wantErr: "rego_parse_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			results, err := authz.TestPolicies(context.Background(), tt.dir, tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for r := range results {
				got[r.Name] = r.Pass()
			}
			if len(got) != len(tt.want) {
				t.Fatalf("results %v, want %v", got, tt.want)
			}
			for name, pass := range tt.want {
				if p, ok := got[name]; !ok || p != pass {
					t.Errorf("%s: ran %v, passed %v; want passed %v", name, ok, p, pass)
				}
			}
		})
	}
}
