package authz

import (
	"context"
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// DefaultTestTimeout is the time limit of each policy test, as opa test's.
const DefaultTestTimeout = 5 * time.Second

// TestOptions say how TestPolicies runs a policy dir's tests.
type TestOptions struct {
	// RegoV0 parses the policies and their tests as Rego v0, as
	// Config.RegoV0 does.
	RegoV0 bool
	// Run, when set, keeps only the tests whose full name
	// (data.pkg.test_name) matches this regular expression.
	Run string
	// Timeout is the time limit of each test. Zero means
	// DefaultTestTimeout.
	Timeout time.Duration
}

// TestPolicies runs the Rego unit tests (rules named test_*) of the .rego
// files in dir with OPA's test runner, as opa test does: one at a time in
// file order, over the data documents mounted as the engine mounts them.
// Each result arrives on the channel as its test ends, and the channel is
// closed after the last; the caller reads it to its end. Policies that do
// not parse, or do not compile with their tests, are an error and run
// nothing.
func TestPolicies(ctx context.Context, dir string, opts TestOptions) (<-chan *tester.Result, error) {
	version := ast.RegoV1
	if opts.RegoV0 {
		version = ast.RegoV0
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTestTimeout
	}
	policies, err := LoadPolicies(dir, version)
	if err != nil {
		return nil, err
	}
	store := inmem.NewFromObject(policies.Data)
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		return nil, err
	}
	runner := tester.NewRunner().
		SetDefaultRegoVersion(version).
		SetStore(store).
		SetModules(policies.Modules).
		SetTimeout(opts.Timeout).
		SetParallel(1) // in file order, like opa test
	if opts.Run != "" {
		runner = runner.Filter(opts.Run)
	}
	results, err := runner.RunTests(ctx, txn)
	if err != nil {
		store.Abort(ctx, txn)
		return nil, fmt.Errorf("policies in %s do not compile with their tests: %w", dir, err)
	}
	// The tests read the store through txn until their last result.
	out := make(chan *tester.Result)
	go func() {
		defer close(out)
		defer store.Abort(ctx, txn)
		for r := range results {
			out <- r
		}
	}()
	return out, nil
}
