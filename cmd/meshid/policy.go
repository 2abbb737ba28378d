package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/node"
)

// errPolicyTestsFailed makes `meshid policy test` exit non-zero after it
// has printed which tests failed.
var errPolicyTestsFailed = errors.New("policy tests failed")

// newPolicyCheckCmd compiles a policy dir as meshid run would, and says
// so.
func newPolicyCheckCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "check DIR",
		Short: "Compile a policy directory; errors as file:line:col",
		Long: `Compile the .rego files and data documents in DIR as "meshid run" does,
check that the decision rule is defined, and print every error as
file:line:col.`,
		Example: `  meshid policy check policies/
  meshid policy check policies/ --decision mesh/authz/allow
  meshid policy check legacy/ --rego-version v0`,
		Args:              oneDir,
		ValidArgsFunction: completeDirs,
	}
	decision := decisionFlag(cmd, "authz.decision; it must be defined")
	version := cli.RegoVersionFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		dir := args[0]
		if err := checkRegoVersion(*version); err != nil {
			return cli.Usage(cmd, err)
		}
		ref, err := decisionRef(*decision)
		if err != nil {
			return cli.Usage(cmd, err)
		}
		e, err := authz.NewEngine(cmd.Context(), authz.Config{PolicyDir: dir, Decision: ref, RegoV0: *version == "v0"})
		if err != nil {
			return err
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s: policies compile; decision %s is defined\n", dir, e.Decision())
		return nil
	}
	return cmd
}

// newPolicyTestCmd runs the Rego unit tests (test_ rules) of a policy dir
// with OPA's runner and prints OPA's report.
func newPolicyTestCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "test DIR",
		Short: "Run the Rego unit tests of a policy directory",
		Long: `Run the Rego unit tests (rules named test_*) of the policies and data
documents in DIR, as "opa test" does, and print OPA's report. Exits 1 when
a test fails or DIR has none.`,
		Example: `  meshid policy test policies/
  meshid policy test policies/ -v
  meshid policy test policies/ --run 'test_get.*' --timeout 10s`,
		Args:              oneDir,
		ValidArgsFunction: completeDirs,
	}
	flags := cmd.Flags()
	verbose := flags.BoolP("verbose", "v", false, "list every test, not only failures")
	run := flags.StringP("run", "r", "", "run only the tests whose full name (data.pkg.test_name) matches this regular expression")
	var timeout time.Duration
	cli.TimeoutFlag(cmd, &timeout, authz.DefaultTestTimeout, "time limit of each test")
	version := cli.RegoVersionFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		dir := args[0]
		if err := checkRegoVersion(*version); err != nil {
			return cli.Usage(cmd, err)
		}
		results, err := authz.TestPolicies(cmd.Context(), dir, authz.TestOptions{RegoV0: *version == "v0", Run: *run, Timeout: timeout})
		if err != nil {
			return err
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
		if err := (tester.PrettyReporter{Output: cmd.OutOrStdout(), Verbose: *verbose, FailureLine: true}).Report(counted); err != nil {
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
	return cmd
}

// newPolicyEvalCmd decides one CheckRequest the way meshid run would and
// prints the decision, the CheckResponse Envoy would get and, on request,
// the input document the policy saw.
func newPolicyEvalCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "eval -i check.json [-d DIR] [DECISION]",
		Short: "Decide one CheckRequest (proto-JSON) with the policies",
		Long: `Decide one request as "meshid run" would, and print the decision id, whether
it is allowed, the policy's result, the CheckResponse Envoy would get and,
with --show-input, the input document the policy saw. With --explain, say
instead in plain words how the decision came about, as "meshid policy why"
does for a logged one. check.json is an Envoy CheckRequest in proto-JSON,
e.g. the demo frontend's GET /hello to the backend, which the shipped
policies allow:
  {"attributes": {"source": {"principal": "spiffe://example.org/ns/demo/sa/frontend"},
                  "destination": {"principal": "spiffe://example.org/ns/demo/sa/backend"},
                  "request": {"http": {"method": "GET", "path": "/hello"}}}}

DECISION (or --decision) is the rule that decides, as OPA-Envoy's path
envoy/authz/allow or as the reference data.envoy.authz.allow; default
authz.decision. -d is the policy directory (--policy is its old name).
With --config, that meshid.yaml sets everything the flags do not, as
"meshid run" reads it: the authz section (x-forwarded-client-cert trust,
JWT audiences, proto descriptors, body limits, deny status, dry run), and
JWT-SVIDs are validated against the keys of the CA in its data_dir and of
its federated trust domains.`,
		Example: `  meshid policy eval -i check.json -d policies/
  meshid policy eval -i check.json -d policies/ envoy/authz/allow --show-input
  meshid policy eval --config /etc/meshid/meshid.yaml -i - < check.json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return cli.Usagef(cmd, "policy eval: want at most one DECISION, got %d arguments", len(args))
			}
			return nil
		},
		ValidArgsFunction: cobra.NoFileCompletions,
	}
	flags := cmd.Flags()
	input := flags.StringP("input", "i", "", "`file` holding the CheckRequest in proto-JSON; - reads stdin")
	configPath := cli.ConfigFlag(cmd, "decide as \"meshid run\" would with this `meshid.yaml`: its authz section's settings, which the flags override")
	dir := flags.StringP("data", "d", "policies", "the policy `directory` (authz.policy_dir)")
	flags.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		if name == "policy" {
			name = "data"
		}
		return pflag.NormalizedName(name)
	})
	decision := decisionFlag(cmd, "authz.decision")
	timeout := flags.Duration("eval-timeout", authz.DefaultEvalTimeout, "time limit of the evaluation (authz.eval_timeout)")
	version := cli.RegoVersionFlag(cmd)
	showInput := flags.Bool("show-input", false, "print the input document the policy saw too")
	explain := flags.Bool("explain", false, "say in plain words, with file:line, which rules applied and which expression failed, instead of the JSON")
	_ = cmd.MarkFlagFilename("input", "json")
	_ = cmd.MarkFlagDirname("data")

	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if *input == "" {
			return cli.Usagef(cmd, "policy eval: -input is required (-i FILE, the CheckRequest)")
		}
		if err := checkRegoVersion(*version); err != nil {
			return cli.Usage(cmd, err)
		}
		given := append([]string{}, args...) // DECISION, then --decision
		if flags.Changed("decision") {
			given = append(given, *decision)
		}
		var refs []string
		for _, d := range given {
			ref, err := decisionRef(d)
			if err != nil {
				return cli.Usage(cmd, err)
			}
			refs = append(refs, ref)
		}
		if len(refs) == 2 && refs[0] != refs[1] {
			return cli.Usagef(cmd, "policy eval: two decisions, %s and -decision %s: give one", args[0], *decision)
		}
		var data []byte
		var err error
		if *input == "-" {
			data, err = io.ReadAll(cmd.InOrStdin())
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
		cfg := config.Default()
		if *configPath != "" {
			if cfg, err = node.LoadConfig(*configPath); err != nil {
				return err
			}
		}
		if flags.Changed("data") {
			cfg.Authz.PolicyDir = *dir
		}
		if len(refs) > 0 {
			cfg.Authz.Decision = refs[0]
		}
		if flags.Changed("eval-timeout") {
			cfg.Authz.EvalTimeout = *timeout
		}
		if flags.Changed("rego-version") {
			cfg.Authz.RegoVersion = *version
		}
		r, err := node.Decide(cmd.Context(), cfg, &req)
		if err != nil {
			return err
		}
		if *explain {
			return explainDecision(cmd, cfg, r)
		}
		return printDecision(cmd.OutOrStdout(), r, *showInput)
	}
	return cmd
}

// printDecision prints what policy eval found, as JSON: the decision id,
// whether the policy allowed, its result or why there is none, the
// CheckResponse Envoy would get and, with showInput, the input document.
func printDecision(w io.Writer, r *authz.Result, showInput bool) error {
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
	if showInput && r.Input != nil {
		out.Input, _ = ast.JSON(r.Input)
	}
	resp, err := protojson.Marshal(r.Response)
	if err != nil {
		return err
	}
	out.Response = resp
	return cli.WriteJSON(w, out)
}
