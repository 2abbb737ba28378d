package authz

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/meshid/meshid/authz/decisionlog"
)

// Defaults of Config, the same as the OPA-Envoy plugin's where it has one.
const (
	DefaultDecision    = "data.envoy.authz.allow"
	DefaultEvalTimeout = 100 * time.Millisecond
)

// Config says where the policies are and which rule decides.
type Config struct {
	// PolicyDir is searched recursively for .rego files and data documents
	// (data.json, data.yaml). Names starting with "." are skipped: a
	// Kubernetes ConfigMap mount holds a second copy of every file under
	// ..<timestamp>/, which would define each rule twice. Empty: none,
	// when Bundles are the policies.
	PolicyDir string
	// Bundles are compiled with the policy dir as one policy set
	// (bundleset.go); their roots must not overlap each other's nor the
	// policy dir's packages and data.
	Bundles []Bundle
	// Decision is the rule whose value decides, as a data reference.
	// Empty means DefaultDecision.
	Decision string
	// EvalTimeout bounds one decision, from building its input to the
	// end of its evaluation. Zero means DefaultEvalTimeout.
	EvalTimeout time.Duration
	// RegoV0 parses the policies as Rego v0 (OPA before 1.0) instead of v1.
	RegoV0 bool
}

// Engine holds one compiled policy set. It is immutable and safe for
// concurrent use; a new policy set is a new Engine.
type Engine struct {
	query    rego.PreparedEvalQuery
	decision string
	timeout  time.Duration
	files    int // .rego files compiled, for logs
	// keys are the parts of input the decision can read (reads.paths),
	// which key the decision cache; uncacheable says why the decision
	// cannot be cached, if so.
	keys        [][]*ast.Term
	uncacheable string
	// volatile is what of a request the decision never reads; readsJWT
	// whether it can read input.spiffe.jwt (requestkey.go).
	volatile volatile
	readsJWT bool
	policy   *decisionlog.PolicySet
}

// dataFiles are the data documents read from the policy dir, as in an OPA
// bundle: the document in dir/a/b/data.json is data.a.b.
var dataFiles = []string{"data.json", "data.yaml", "data.yml"}

// NewEngine loads, parses and compiles every .rego file and data document
// under cfg.PolicyDir, with cfg.Bundles, and prepares the decision query
// once. Parse and compile errors name each problem as file:line:col.
func NewEngine(ctx context.Context, cfg Config) (*Engine, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	var dir *Policies
	if cfg.PolicyDir != "" || len(cfg.Bundles) == 0 {
		if dir, err = LoadPolicies(cfg.PolicyDir, cfg.regoVersion()); err != nil {
			return nil, err
		}
	}
	return compileEngine(ctx, cfg, dir, true)
}

func (cfg Config) withDefaults() (Config, error) {
	if cfg.Decision == "" {
		cfg.Decision = DefaultDecision
	}
	if cfg.EvalTimeout == 0 {
		cfg.EvalTimeout = DefaultEvalTimeout
	}
	if cfg.EvalTimeout < 0 {
		return cfg, fmt.Errorf("eval timeout %v: must be positive", cfg.EvalTimeout)
	}
	if _, err := decisionRef(cfg.Decision); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func (cfg Config) regoVersion() ast.RegoVersion {
	if cfg.RegoV0 {
		return ast.RegoV0
	}
	return ast.RegoV1
}

// compileEngine compiles the policy dir as loaded (nil: none) with
// cfg.Bundles; cfg has its defaults. Without decide, the set is only
// checked: it may lack the bundle that defines the decision, and it gets
// no prepared query (nil Engine).
func compileEngine(ctx context.Context, cfg Config, dir *Policies, decide bool) (*Engine, error) {
	ref, err := decisionRef(cfg.Decision)
	if err != nil {
		return nil, err
	}
	set, err := mergeSources(cfg, dir)
	if err != nil {
		return nil, err
	}
	what := cfg.sourcesName()

	compiler := ast.NewCompiler().WithDefaultRegoVersion(cfg.regoVersion())
	compiler.Compile(set.modules)
	if compiler.Failed() {
		return nil, fmt.Errorf("rego files %s do not compile:\n%w", what, located(compiler.Errors))
	}
	if !decide {
		return nil, nil
	}
	// A misspelt decision would otherwise be undefined for every request:
	// a silent deny-all that is only noticed in production.
	if len(compiler.GetRules(ref)) == 0 && !definesData(set.data, ref) {
		return nil, fmt.Errorf("decision %s is not defined by any rule %s: check the package name and the rule name", cfg.Decision, what)
	}

	query, err := rego.New(
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(ref)))),
		rego.Compiler(compiler),
		rego.Store(inmem.NewFromObject(set.data)),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare decision %s: %w", cfg.Decision, err)
	}
	regoVersion := "v1"
	if cfg.RegoV0 {
		regoVersion = "v0"
	}
	e := &Engine{
		query: query, decision: cfg.Decision, timeout: cfg.EvalTimeout, files: len(set.modules),
		policy: decisionlog.NewPolicySet(cfg.PolicyDir, regoVersion, set.files),
	}
	e.policy.Bundles = set.revisions
	rd := findReads(compiler, ref)
	e.keys, e.uncacheable = keyPaths(rd.paths), rd.uncacheable
	e.volatile, e.readsJWT = volatileFor(rd.paths), readsJWT(rd.paths)
	return e, nil
}

// Policy is the policy set this engine was compiled from, named by its
// revision.
func (e *Engine) Policy() *decisionlog.PolicySet { return e.policy }

// Policies are the parsed contents of a policy dir.
type Policies struct {
	Modules map[string]*ast.Module // by file path
	Data    map[string]any         // the merged data documents
	// Files are the contents of every file read, by slash-separated path
	// relative to the policy dir: what a decision's policy revision keeps.
	Files map[string][]byte
}

// LoadPolicies parses every .rego file and data document under dir and
// reports the problems of all files at once.
func LoadPolicies(dir string, version ast.RegoVersion) (*Policies, error) {
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

	p := &Policies{Modules: map[string]*ast.Module{}, Data: map[string]any{}, Files: map[string][]byte{}}
	var errs []error
	err = walkPolicyFiles(dir, func(path string) error {
		if filepath.Ext(path) != ".rego" {
			if err := p.addData(dir, path); err != nil {
				errs = append(errs, err)
			}
			return nil
		}
		src, err := p.read(dir, path)
		if err != nil {
			return err
		}
		m, err := ast.ParseModuleWithOpts(path, string(src), ast.ParserOptions{RegoVersion: version})
		if err != nil {
			errs = append(errs, located(err))
			return nil
		}
		p.Modules[path] = m
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read policy dir: %w", err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("files in %s do not parse:\n%w", dir, errors.Join(errs...))
	}
	if len(p.Modules) == 0 {
		return nil, fmt.Errorf("policy dir %s holds no .rego files", dir)
	}
	return p, nil
}

// walkPolicyFiles calls fn with every file of the policy dir the engine
// reads: .rego files and data documents, in directories whose names do not
// start with "." (a ConfigMap mount's second copy lives in one). Loading
// and the reload fingerprint share it, so they always agree on the set.
func walkPolicyFiles(dir string, fn func(path string) error) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || (filepath.Ext(path) != ".rego" && !slices.Contains(dataFiles, d.Name())) {
			return nil
		}
		return fn(path)
	})
}

// addData mounts the document in path at the data path of its directory.
func (p *Policies) addData(root, path string) error {
	src, err := p.read(root, path)
	if err != nil {
		return err
	}
	var doc any
	if filepath.Ext(path) == ".json" {
		err = util.UnmarshalJSON(src, &doc)
	} else {
		err = util.Unmarshal(src, &doc)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return fmt.Errorf("%s: a data document must be an object, not %s", path, jsonType(doc))
	}
	rel, err := filepath.Rel(root, filepath.Dir(path))
	if err != nil {
		return err
	}
	at := p.Data
	if rel != "." {
		for _, key := range strings.Split(filepath.ToSlash(rel), "/") {
			next, ok := at[key].(map[string]any)
			if !ok {
				if _, taken := at[key]; taken {
					return fmt.Errorf("%s: data.%s is already a value, cannot also be a directory of data", path, strings.ReplaceAll(filepath.ToSlash(rel), "/", "."))
				}
				next = map[string]any{}
				at[key] = next
			}
			at = next
		}
	}
	for k, v := range obj {
		if _, taken := at[k]; taken {
			return fmt.Errorf("%s: key %q is defined by another data document too", path, k)
		}
		at[k] = v
	}
	return nil
}

// read reads a file of the policy dir root and keeps its contents.
func (p *Policies) read(root, path string) ([]byte, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rel, err := filepath.Rel(root, path)
	if err != nil {
		return nil, err
	}
	p.Files[filepath.ToSlash(rel)] = src
	return src, nil
}

// definesData reports whether ref points into the data documents, so a
// decision may also be a plain value from data.json.
func definesData(data map[string]any, ref ast.Ref) bool {
	var at any = data
	for _, t := range ref[1:] {
		obj, ok := at.(map[string]any)
		if !ok {
			return false
		}
		s, ok := t.Value.(ast.String)
		if !ok {
			return false
		}
		if at, ok = obj[string(s)]; !ok {
			return false
		}
	}
	return true
}

// errUndefined is an evaluation that produced no value.
var errUndefined = errors.New("undefined")

// eval evaluates the decision for one input document and returns its
// value. An undefined decision is an error, as are passing deadline (by
// the clock now: the decision's eval timeout, which started before its
// input was built) and any evaluation error.
func (e *Engine) eval(ctx context.Context, input ast.Value, deadline time.Time, now func() time.Time) (ast.Value, error) {
	// The deadline cancels the evaluation on the timeout, or when the
	// caller gives up, without the goroutine per evaluation rego would
	// start to watch ctx.
	st := getEvalState(ctx, deadline, now)
	defer putEvalState(st)

	rs, err := e.query.Eval(ctx,
		rego.EvalParsedInput(input),
		rego.EvalExternalCancel(&st.deadline),
		rego.EvalVirtualCache(&st.rules),
		rego.EvalMetrics(metrics.NoOp()),
		// Keep the value as a term: the result is mapped to a
		// CheckResponse from the term, with no Go map in between.
		rego.EvalGenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }),
	)
	if err != nil {
		if st.deadline.timedOut() {
			return nil, fmt.Errorf("evaluate %s: not decided within the eval timeout (%v): %w", e.decision, e.timeout, err)
		}
		return nil, fmt.Errorf("evaluate %s: %w", e.decision, err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, fmt.Errorf("decision %s is %w for this request: no rule matched and there is no default", e.decision, errUndefined)
	}
	t, ok := rs[0].Expressions[0].Value.(*ast.Term)
	if !ok {
		return nil, fmt.Errorf("evaluate %s: result is a %T, not a term", e.decision, rs[0].Expressions[0].Value)
	}
	return t.Value, nil
}

// Cacheable says whether the engine's decisions can be cached, and if not,
// why.
func (e *Engine) Cacheable() (bool, string) { return e.uncacheable == "", e.uncacheable }

// Decision is the rule reference this engine evaluates.
func (e *Engine) Decision() string { return e.decision }

func decisionRef(decision string) (ast.Ref, error) {
	ref, err := ast.ParseRef(decision)
	if err != nil || !ref.HasPrefix(ast.DefaultRootRef) || !ref.IsGround() {
		return nil, fmt.Errorf("decision %q: want a reference into data such as %s", decision, DefaultDecision)
	}
	return ref, nil
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

// jsonType names the JSON type of a decoded document for error messages.
func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	default:
		return "number"
	}
}
