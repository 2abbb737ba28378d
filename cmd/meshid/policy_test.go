package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshid/meshid/test/authztest"
)

const (
	testPolicyV0  = "package envoy.authz\n\ndefault allow = false\n\nallow {\n  input.parsed_path[0] == \"hello\"\n}\n"
	passingTests  = "package envoy.authz_test\n\nimport data.envoy.authz\n\ntest_get if authz.allow with input as {\"attributes\": {\"request\": {\"http\": {\"method\": \"GET\"}}}, \"parsed_path\": [\"hello\"]}\n\ntest_post_denied if not authz.allow with input as {\"attributes\": {\"request\": {\"http\": {\"method\": \"POST\"}}}, \"parsed_path\": [\"hello\"]}\n"
	failingTests  = "package envoy.authz_test\n\nimport data.envoy.authz\n\ntest_post_allowed if authz.allow with input as {\"attributes\": {\"request\": {\"http\": {\"method\": \"POST\"}}}, \"parsed_path\": [\"hello\"]}\n"
	brokenPolicy  = "package envoy.authz\n\nallow if {\n\tinput.x == y\n}\n"
	unparsablePol = "package envoy.authz\n\nallow if {\n"
)

func runCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = dispatch(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestPolicyCheck(t *testing.T) {
	good := authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData})
	broken := authztest.PolicyDir(t, map[string]string{"authz.rego": brokenPolicy})
	unparsable := authztest.PolicyDir(t, map[string]string{"a/authz.rego": unparsablePol})
	v0 := authztest.PolicyDir(t, map[string]string{"authz.rego": testPolicyV0})
	tests := []struct {
		name    string
		args    []string
		out     string
		wantErr string
	}{
		{"compiles", []string{good}, good + ": policies compile; decision data.envoy.authz.allow is defined", ""},
		{"compile error with position", []string{broken}, "", filepath.Join(broken, "authz.rego") + ":4:2: rego_unsafe_var_error: var y is unsafe"},
		{"parse error with position", []string{unparsable}, "", filepath.Join(unparsable, "a/authz.rego") + ":4:0: rego_parse_error: unexpected eof token"},
		{"decision not defined", []string{"-decision", "data.mesh.allow", good}, "", "decision data.mesh.allow is not defined"},
		{"v0 refused as v1", []string{v0}, "", "rego_parse_error"},
		{"v0 accepted as v0", []string{"-rego-version", "v0", v0}, "policies compile", ""},
		{"bad rego version", []string{"-rego-version", "v2", good}, "", `-rego-version "v2"`},
		{"no dir", nil, "", "want exactly one policy directory"},
		{"missing dir", []string{filepath.Join(good, "nope")}, "", "no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCmd(t, append([]string{"policy", "check"}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(out, tt.out) {
				t.Fatalf("out %q, err %v; want %q", out, err, tt.out)
			}
		})
	}
}

func TestPolicyTest(t *testing.T) {
	passing := authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData, "authz_test.rego": passingTests})
	failing := authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData, "authz_test.rego": passingTests, "more_test.rego": failingTests})
	none := authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData})
	tests := []struct {
		name    string
		args    []string
		out     []string
		wantErr error
		errHas  string
	}{
		{"passing", []string{passing}, []string{"PASS: 2/2"}, nil, ""},
		{"verbose", []string{"-v", passing}, []string{"data.envoy.authz_test.test_get: PASS", "data.envoy.authz_test.test_post_denied: PASS", "PASS: 2/2"}, nil, ""},
		{"failing", []string{failing}, []string{"data.envoy.authz_test.test_post_allowed: FAIL", "PASS: 2/3", "FAIL: 1/3"}, errPolicyTestsFailed, "1 of 3"},
		{"filtered", []string{"-run", "test_get", failing}, []string{"PASS: 1/1"}, nil, ""},
		{"no tests", []string{none}, nil, nil, "no tests in"},
		{"the shipped policies", []string{"../../policies"}, []string{"PASS: "}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCmd(t, append([]string{"policy", "test"}, tt.args...)...)
			for _, w := range tt.out {
				if !strings.Contains(out, w) {
					t.Errorf("output does not contain %q:\n%s", w, out)
				}
			}
			switch {
			case tt.errHas == "" && err != nil:
				t.Errorf("err = %v", err)
			case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
				t.Errorf("err = %v, want one containing %q", err, tt.errHas)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestPolicyEval(t *testing.T) {
	dir := authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData})
	input := func(method, path string) string {
		p := filepath.Join(t.TempDir(), "check.json")
		body := `{"attributes": {"source": {"principal": "spiffe://example.org/ns/demo/sa/frontend"}, "request": {"http": {"method": "` + method + `", "path": "` + path + `", "headers": {"x-a": "b"}}}}}`
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name     string
		args     []string
		allowed  bool
		result   string // JSON
		response string // substring of the response JSON
		errField string
		wantErr  string
	}{
		{name: "allow", args: []string{"-input", input("GET", "/hello"), "-policy", dir}, allowed: true, result: "true", response: `"okResponse"`},
		{name: "deny", args: []string{"-input", input("POST", "/hello"), "-policy", dir}, result: "false", response: `"deniedResponse":{"status":{"code":"Forbidden"}`},
		{name: "object deny", args: []string{"-input", input("GET", "/private"), "-policy", dir}, result: `{"allowed":false,"body":"who?","http_status":401}`, response: `"code":"Unauthorized"`},
		{name: "no decision", args: []string{"-input", input("GET", "/bad%zz"), "-policy", dir}, response: `"deniedResponse"`, errField: "request path"},
		{name: "show input", args: []string{"-input", input("GET", "/hello"), "-policy", dir, "-show-input"}, allowed: true, result: "true", response: `"okResponse"`},
		{name: "not a CheckRequest", args: []string{"-input", dir + "/data.json", "-policy", dir}, wantErr: "is not a CheckRequest in proto-JSON"},
		{name: "no input", args: []string{"-policy", dir}, wantErr: "-input is required"},
		{name: "policies do not compile", args: []string{"-input", input("GET", "/"), "-policy", authztest.PolicyDir(t, map[string]string{"a.rego": brokenPolicy})}, wantErr: "rego_unsafe_var_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCmd(t, append([]string{"policy", "eval"}, tt.args...)...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				DecisionID string          `json:"decision_id"`
				Allowed    bool            `json:"allowed"`
				Result     json.RawMessage `json:"result"`
				Error      string          `json:"error"`
				Response   json.RawMessage `json:"response"`
				Input      map[string]any  `json:"input"`
			}
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("output is not JSON: %v\n%s", err, out)
			}
			var compact, result bytes.Buffer
			json.Compact(&compact, got.Response)
			json.Compact(&result, got.Result)
			if got.DecisionID == "" || got.Allowed != tt.allowed || result.String() != tt.result ||
				!strings.Contains(compact.String(), tt.response) || !strings.Contains(got.Error, tt.errField) {
				t.Fatalf("output %s\nwant allowed %v, result %s, response containing %s, error %q", out, tt.allowed, tt.result, tt.response, tt.errField)
			}
			if tt.name == "show input" && got.Input["parsed_path"] == nil {
				t.Errorf("-show-input printed no input: %s", out)
			}
		})
	}
}

// TestPolicyEvalHelpExample: the CheckRequest policy eval's help shows is
// allowed by the shipped policies, as its help says, when run as its first
// example runs it.
func TestPolicyEvalHelpExample(t *testing.T) {
	cmd := newPolicyEvalCmd()
	start, end := strings.Index(cmd.Long, "{"), strings.LastIndex(cmd.Long, "}")
	if start < 0 || end < start {
		t.Fatalf("no CheckRequest in the help:\n%s", cmd.Long)
	}
	check := filepath.Join(t.TempDir(), "check.json")
	if err := os.WriteFile(check, []byte(cmd.Long[start:end+1]), 0o644); err != nil {
		t.Fatal(err)
	}
	example := strings.Fields(strings.Split(strings.TrimSpace(cmd.Example), "\n")[0])
	if got := strings.Join(example, " "); got != "meshid policy eval -i check.json -d policies/" {
		t.Fatalf("first example %q: this test runs it with the help's check.json and the shipped policies", got)
	}
	out, _, err := runCmd(t, "policy", "eval", "-i", check, "-d", filepath.Join("..", "..", "policies"))
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Allowed bool   `json:"allowed"`
		Error   string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil || !got.Allowed {
		t.Fatalf("the help's example is not allowed (%v):\n%s", err, out)
	}
}
