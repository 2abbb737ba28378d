package authz

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// Defaults of Config, the same as the OPA-Envoy plugin's where it has one.
const (
	DefaultDecision    = "data.envoy.authz.allow"
	DefaultEvalTimeout = 100 * time.Millisecond
)

// Config says where the policies are and which rule decides.
type Config struct {
	// PolicyDir is searched recursively for .rego files. Names starting
	// with "." are skipped: a Kubernetes ConfigMap mount holds a second copy
	// of every file under ..<timestamp>/, which would define each rule twice.
	PolicyDir string
	// Decision is the rule whose value decides, as a data reference.
	// Empty means DefaultDecision.
	Decision string
	// EvalTimeout bounds one decision, input included. Zero means
	// DefaultEvalTimeout.
	EvalTimeout time.Duration
}

// Engine holds one compiled policy set. It is immutable and safe for
// concurrent use; a new policy set is a new Engine.
type Engine struct {
	query    rego.PreparedEvalQuery
	decision string
	timeout  time.Duration
}

// NewEngine loads, parses and compiles every .rego file under
// cfg.PolicyDir (Rego v1) and prepares the decision query once.
// Parse and compile errors name each problem as file:line:col.
func NewEngine(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.Decision == "" {
		cfg.Decision = DefaultDecision
	}
	if cfg.EvalTimeout == 0 {
		cfg.EvalTimeout = DefaultEvalTimeout
	}
	if cfg.EvalTimeout < 0 {
		return nil, fmt.Errorf("eval timeout %v: must be positive", cfg.EvalTimeout)
	}
	ref, err := decisionRef(cfg.Decision)
	if err != nil {
		return nil, err
	}
	modules, err := loadModules(cfg.PolicyDir)
	if err != nil {
		return nil, err
	}

	compiler := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)
	compiler.Compile(modules)
	if compiler.Failed() {
		return nil, fmt.Errorf("rego files in %s do not compile:\n%w", cfg.PolicyDir, located(compiler.Errors))
	}
	// A misspelt decision would otherwise be undefined for every request:
	// a silent deny-all that is only noticed in production.
	if len(compiler.GetRules(ref)) == 0 {
		return nil, fmt.Errorf("decision %s is not defined by any rule in %s: check the package name and the rule name", cfg.Decision, cfg.PolicyDir)
	}

	query, err := rego.New(
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
		rego.Compiler(compiler),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare decision %s: %w", cfg.Decision, err)
	}
	return &Engine{query: query, decision: cfg.Decision, timeout: cfg.EvalTimeout}, nil
}

// Decide evaluates the decision for one Check request. Anything but a
// clear allow is a deny: an error always comes with allowed == false and
// says why no decision was reached.
func (e *Engine) Decide(ctx context.Context, req *authv3.CheckRequest) (allowed bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()

	in, err := input(req)
	if err != nil {
		return false, fmt.Errorf("build policy input: %w", err)
	}
	rs, err := e.query.Eval(ctx, rego.EvalParsedInput(in))
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return false, fmt.Errorf("evaluate %s: not decided within the eval timeout (%v): %w", e.decision, e.timeout, err)
		}
		return false, fmt.Errorf("evaluate %s: %w", e.decision, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return false, fmt.Errorf("decision %s is undefined for this request: no rule matched and there is no default", e.decision)
	}
	switch v := rs[0].Expressions[0].Value.(type) {
	case bool:
		return v, nil
	case map[string]any:
		return objectDecision(e.decision, v)
	default:
		return false, fmt.Errorf("decision %s is a %s, want a boolean or an object with a boolean \"allowed\"", e.decision, jsonType(v))
	}
}

// objectDecision honours the "allowed" field of OPA-Envoy's object result.
// The other fields (headers to add or remove, status, body, metadata) are
// not applied yet, so an allow that carries any of them is refused: the
// policy may rely on, say, request_headers_to_remove stripping a spoofable
// header, and allowing without doing it would be worse than denying.
func objectDecision(decision string, obj map[string]any) (bool, error) {
	allowed, ok := obj["allowed"].(bool)
	if !ok {
		return false, fmt.Errorf("decision %s is an object without a boolean \"allowed\" field", decision)
	}
	if !allowed {
		return false, nil
	}
	var extra []string
	for k := range obj {
		if k != "allowed" {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		return false, fmt.Errorf("decision %s allows with %s, which meshid does not apply yet; denying instead of allowing without them", decision, strings.Join(extra, ", "))
	}
	return true, nil
}

func decisionRef(decision string) (ast.Ref, error) {
	ref, err := ast.ParseRef(decision)
	if err != nil || !ref.HasPrefix(ast.DefaultRootRef) || !ref.IsGround() {
		return nil, fmt.Errorf("decision %q: want a reference into data such as %s", decision, DefaultDecision)
	}
	return ref, nil
}

// loadModules parses every .rego file under dir and reports the parse
// errors of all files at once.
func loadModules(dir string) (map[string]*ast.Module, error) {
	if dir == "" {
		return nil, errors.New("no policy dir configured")
	}
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("policy dir: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("policy dir %s is not a directory", dir)
	}

	modules := map[string]*ast.Module{}
	var parseErrs []error
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || filepath.Ext(path) != ".rego" {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		m, err := ast.ParseModuleWithOpts(path, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			parseErrs = append(parseErrs, located(err))
			return nil
		}
		modules[path] = m
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read policy dir: %w", err)
	}
	if len(parseErrs) > 0 {
		return nil, fmt.Errorf("rego files in %s do not parse:\n%w", dir, errors.Join(parseErrs...))
	}
	if len(modules) == 0 {
		return nil, fmt.Errorf("policy dir %s holds no .rego files", dir)
	}
	return modules, nil
}

// locatedErrors prints OPA's errors one a line as file:line:col, which
// ast.Error alone does not (it leaves out the column when it has a file).
type locatedErrors ast.Errors

func (e locatedErrors) Error() string {
	lines := make([]string, 0, len(e))
	for _, err := range e {
		var b strings.Builder
		if loc := err.Location; loc != nil {
			fmt.Fprintf(&b, "%s:%d:%d: ", loc.File, loc.Row, loc.Col)
		}
		b.WriteString(err.Code + ": " + err.Message)
		if err.Details != nil {
			for _, l := range err.Details.Lines() {
				b.WriteString("\n\t" + l)
			}
		}
		lines = append(lines, b.String())
	}
	return strings.Join(lines, "\n")
}

func (e locatedErrors) Unwrap() error { return ast.Errors(e) }

// located turns OPA parse and compile errors into locatedErrors and leaves
// any other error alone.
func located(err error) error {
	var astErrs ast.Errors
	if errors.As(err, &astErrs) {
		astErrs.Sort()
		return locatedErrors(astErrs)
	}
	return err
}

// jsonType names the JSON type of an evaluation result for error messages.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case json.Number:
		return "number"
	case []any:
		return "array"
	default:
		return fmt.Sprintf("%T", v)
	}
}
