package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/node"
)

// errPolicyTestsFailed makes `meshid policy test` exit non-zero after it
// has printed which tests failed.
var errPolicyTestsFailed = errors.New("policy tests failed")

// regoVersionFlag is the -rego-version flag every policy command takes.
func regoVersionFlag(flags *flag.FlagSet) *string {
	return flags.String("rego-version", "v1", "Rego version of the policies: v1, or v0 for policies written before OPA 1.0 (authz.rego_version)")
}

func regoVersion(s string) (ast.RegoVersion, error) {
	switch s {
	case "v1":
		return ast.RegoV1, nil
	case "v0":
		return ast.RegoV0, nil
	}
	return 0, fmt.Errorf("-rego-version %q: want v1 or v0", s)
}

// policyDirArg is the one DIR argument of policy test and policy check.
func policyDirArg(flags *flag.FlagSet, args []string) (string, error) {
	if err := flags.Parse(args); err != nil {
		return "", err
	}
	if flags.NArg() != 1 {
		flags.Usage()
		return "", fmt.Errorf("%s: want exactly one policy directory, got %d arguments", flags.Name(), flags.NArg())
	}
	return flags.Arg(0), nil
}

// policyCheck compiles a policy dir as meshid run would, and says so.
func policyCheck(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("policy check", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: meshid policy check [-decision REF] [-rego-version v1|v0] DIR\n\nCompile the .rego files and data documents in DIR as meshid run does; print every error as file:line:col.")
		flags.PrintDefaults()
	}
	decision := flags.String("decision", authz.DefaultDecision, "the rule that decides (authz.decision); it must be defined")
	version := regoVersionFlag(flags)
	dir, err := policyDirArg(flags, args)
	if err != nil {
		return err
	}
	if _, err := regoVersion(*version); err != nil {
		return err
	}
	e, err := authz.NewEngine(context.Background(), authz.Config{PolicyDir: dir, Decision: *decision, RegoV0: *version == "v0"})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: policies compile; decision %s is defined\n", dir, e.Decision())
	return nil
}

// policyTest runs the Rego unit tests (test_ rules) of a policy dir with
// OPA's runner and prints OPA's report.
func policyTest(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("policy test", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: meshid policy test [-v] [-run REGEX] [-timeout D] [-rego-version v1|v0] DIR\n\nRun the Rego unit tests (rules named test_*) of the policies and data documents in DIR.")
		flags.PrintDefaults()
	}
	verbose := flags.Bool("v", false, "list every test, not only failures")
	run := flags.String("run", "", "run only the tests whose full name (data.pkg.test_name) matches this regular expression")
	timeout := flags.Duration("timeout", 5*time.Second, "time limit of each test")
	version := regoVersionFlag(flags)
	dir, err := policyDirArg(flags, args)
	if err != nil {
		return err
	}
	v, err := regoVersion(*version)
	if err != nil {
		return err
	}
	policies, err := authz.LoadPolicies(dir, v)
	if err != nil {
		return err
	}
	ctx := context.Background()
	store := inmem.NewFromObject(policies.Data)
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return err
	}
	defer store.Abort(ctx, txn)
	runner := tester.NewRunner().
		SetDefaultRegoVersion(v).
		SetStore(store).
		SetModules(policies.Modules).
		SetTimeout(*timeout).
		SetParallel(1) // in file order, like opa test
	if *run != "" {
		runner = runner.Filter(*run)
	}
	results, err := runner.RunTests(ctx, txn)
	if err != nil {
		return fmt.Errorf("policies in %s do not compile with their tests: %w", dir, err)
	}

	// Count as the results go by; the reporter prints them.
	counted := make(chan *tester.Result)
	var ran, failed int
	go func() {
		defer close(counted)
		for r := range results {
			ran++
			if r.Fail || r.Error != nil {
				failed++
			}
			counted <- r
		}
	}()
	if err := (tester.PrettyReporter{Output: stdout, Verbose: *verbose, FailureLine: true}).Report(counted); err != nil {
		return err
	}
	switch {
	case failed > 0:
		return fmt.Errorf("%w: %d of %d", errPolicyTestsFailed, failed, ran)
	case ran == 0:
		return fmt.Errorf("no tests in %s: a policy's tests are rules named test_* (usually in a *_test.rego file)", dir)
	}
	return nil
}

// policyEval decides one CheckRequest the way meshid run would and prints
// the decision, the CheckResponse Envoy would get and, on request, the
// input document the policy saw.
func policyEval(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("policy eval", flag.ContinueOnError)
	flags.SetOutput(stderr)
	flags.Usage = func() {
		fmt.Fprintln(stderr, "usage: meshid policy eval -input check.json [-config meshid.yaml] [-policy DIR] [-decision REF] [-rego-version v1|v0] [-show-input]\n\nDecide one request. check.json is an Envoy CheckRequest in proto-JSON, e.g.\n  {\"attributes\": {\"source\": {\"principal\": \"spiffe://example.org/ns/demo/sa/frontend\"},\n                  \"request\": {\"http\": {\"method\": \"GET\", \"path\": \"/hello\"}}}}")
		flags.PrintDefaults()
	}
	input := flags.String("input", "", "file holding the CheckRequest in proto-JSON; - reads stdin")
	configPath := flags.String("config", "", "decide as `meshid run -config` would: the authz section's settings, which the flags below override")
	dir := flags.String("policy", "policies", "policy directory (authz.policy_dir)")
	decision := flags.String("decision", authz.DefaultDecision, "the rule that decides (authz.decision)")
	timeout := flags.Duration("eval-timeout", authz.DefaultEvalTimeout, "time limit of the evaluation (authz.eval_timeout)")
	version := regoVersionFlag(flags)
	showInput := flags.Bool("show-input", false, "print the input document the policy saw too")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *input == "" || flags.NArg() != 0 {
		flags.Usage()
		return errors.New("policy eval: -input is required and there are no arguments")
	}
	if _, err := regoVersion(*version); err != nil {
		return err
	}
	var data []byte
	var err error
	if *input == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(*input)
	}
	if err != nil {
		return fmt.Errorf("-input: %w", err)
	}
	var req authv3.CheckRequest
	if err := protojson.Unmarshal(data, &req); err != nil {
		return fmt.Errorf("-input %s is not a CheckRequest in proto-JSON: %w", *input, err)
	}
	authzCfg := config.Default().Authz
	if *configPath != "" {
		cfg, err := node.LoadConfig(*configPath)
		if err != nil {
			return err
		}
		authzCfg = cfg.Authz
	}
	flags.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "policy":
			authzCfg.PolicyDir = *dir
		case "decision":
			authzCfg.Decision = *decision
		case "eval-timeout":
			authzCfg.EvalTimeout = *timeout
		case "rego-version":
			authzCfg.RegoVersion = *version
		}
	})
	e, err := authz.NewEngine(context.Background(), node.EngineConfig(authzCfg))
	if err != nil {
		return err
	}
	srv, err := authz.NewServer(e, node.ServerOptions(authzCfg, nil))
	if err != nil {
		return err
	}
	r := srv.Decide(context.Background(), &req)

	out := struct {
		DecisionID string          `json:"decision_id"`
		Allowed    bool            `json:"allowed"`
		Result     any             `json:"result,omitempty"`
		Error      string          `json:"error,omitempty"`
		Response   json.RawMessage `json:"response"`
		Input      any             `json:"input,omitempty"`
	}{DecisionID: r.ID, Allowed: r.Allowed}
	if r.Decision != nil {
		out.Result, _ = ast.JSON(r.Decision)
	}
	if r.Err != nil {
		out.Error = r.Err.Error()
	}
	if *showInput && r.Input != nil {
		out.Input, _ = ast.JSON(r.Input)
	}
	if out.Response, err = protojson.Marshal(r.Response); err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
