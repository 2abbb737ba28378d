package authz

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Explanation says how one decision came about, from OPA's trace of its
// evaluation: the rules of the decision in the order they were tried,
// whether each applied and, for one that did not, the first expression of
// its body that failed, where it is and what its operands were.
type Explanation struct {
	Decision string
	// Value is the decision; nil when it was undefined or failed.
	Value ast.Value
	// Err is why the evaluation failed, when it did.
	Err   error
	Rules []*RuleTrace
	// Cut says the trace was longer than an explanation reads
	// (maxTraceEvents): what came after is left out.
	Cut bool
}

// RuleTrace is one rule as it was evaluated.
type RuleTrace struct {
	Rule    *ast.Rule
	Applied bool
	// Value is what the rule gave when it applied.
	Value *ast.Term
	// Failed is the first expression of its body that failed; nil when
	// it applied, or when its body failed in a query of its own.
	Failed *ExprTrace
}

// ExprTrace is an expression that failed.
type ExprTrace struct {
	Expr *ast.Expr
	// Undefined says it failed because a value it refers to does not
	// exist, rather than because it was false.
	Undefined bool
	Operands  []Operand
	// Rules are the rules it referred to, as they were evaluated for it.
	Rules []*RuleTrace
}

// Operand is one value a failed expression referred to, as it was then.
type Operand struct {
	Name  string    // as written: input.parsed_path, x
	Value *ast.Term // nil: undefined
}

// Bounds of an explanation: the events of one trace it reads, and how
// long it may take, so that explaining a denial in the daemon is work
// bounded whatever the policy.
const (
	maxTraceEvents = 20000
	explainTimeout = time.Second
)

// Explain evaluates the decision for input again, with OPA's tracer and
// without rule indexing (so every rule is tried and the trace shows why
// each did not apply), and says how the decision came about. It takes at
// most the engine's eval timeout or explainTimeout, whichever is longer.
func (e *Engine) Explain(ctx context.Context, input ast.Value) *Explanation {
	timeout := max(e.timeout, explainTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := newExplainTracer()
	x := &Explanation{Decision: e.decision}
	rs, err := e.query.Eval(ctx,
		rego.EvalParsedInput(input),
		rego.EvalQueryTracer(t),
		rego.EvalRuleIndexing(false),
	)
	x.Rules, x.Cut = t.top, t.cut
	switch {
	case err != nil && ctx.Err() != nil:
		x.Err = fmt.Errorf("explaining took longer than %v: %w", timeout, err)
	case err != nil:
		x.Err = err
	case len(rs) > 0 && len(rs[0].Expressions) > 0:
		if v, err := ast.InterfaceToValue(rs[0].Expressions[0].Value); err == nil {
			x.Value = v
		}
	}
	return x
}

// explainTracer is a topdown.QueryTracer that keeps, of a trace, the
// rules entered, whether each exited, and the first expression of each
// rule body that failed, with the values of its operands read when it
// failed (bindings change afterwards).
type explainTracer struct {
	root    uint64
	started bool
	rules   map[uint64]*ruleQuery // query id of a rule body
	owner   map[uint64]*ruleQuery // query id of a rule body or a query nested in one
	top     []*RuleTrace
	events  int
	cut     bool
}

type ruleQuery struct {
	trace    *RuleTrace
	children []*RuleTrace // rules entered from this body
	mark     int          // len(children) when the expression being evaluated began
	// defs are the terms the compiler's own variables stand for: it
	// rewrites `x in data.methods` as `__local1__ = data.methods` and a
	// call on __local1__.
	defs map[ast.Var]*ast.Term
}

func newExplainTracer() *explainTracer {
	return &explainTracer{rules: map[uint64]*ruleQuery{}, owner: map[uint64]*ruleQuery{}}
}

func (t *explainTracer) Enabled() bool { return true }

// Config asks for local variables' metadata, which names the variables
// the compiler renamed as they are written.
func (t *explainTracer) Config() topdown.TraceConfig {
	return topdown.TraceConfig{PlugLocalVars: true}
}

func (t *explainTracer) TraceEvent(evt topdown.Event) {
	if t.cut {
		return
	}
	if t.events++; t.events > maxTraceEvents {
		t.cut = true
		return
	}
	if !t.started {
		t.root, t.started = evt.QueryID, true
	}
	switch evt.Op {
	case topdown.EnterOp:
		rule, ok := evt.Node.(*ast.Rule)
		if !ok {
			// A query nested in a rule body (not, every, a
			// comprehension): rules it enters count as the body's.
			if p := t.owner[evt.ParentID]; p != nil && evt.QueryID != t.root {
				t.owner[evt.QueryID] = p
			}
			return
		}
		q := &ruleQuery{trace: &RuleTrace{Rule: rule}}
		t.rules[evt.QueryID], t.owner[evt.QueryID] = q, q
		if p := t.owner[evt.ParentID]; p != nil {
			p.children = append(p.children, q.trace)
		} else {
			t.top = append(t.top, q.trace)
		}
	case topdown.ExitOp:
		if rule, ok := evt.Node.(*ast.Rule); ok {
			if q := t.rules[evt.QueryID]; q != nil {
				q.trace.Applied = true
				if rule.Head.Value != nil {
					q.trace.Value = evt.Plug(rule.Head.Value)
				}
			}
		}
	case topdown.EvalOp:
		if q := t.rules[evt.QueryID]; q != nil && evt.HasExpr() {
			q.mark = len(q.children)
			q.define(evt.Node.(*ast.Expr))
		}
	case topdown.FailOp:
		q := t.rules[evt.QueryID]
		expr, ok := evt.Node.(*ast.Expr)
		if q == nil || !ok || q.trace.Failed != nil {
			return
		}
		f := &ExprTrace{Expr: expr}
		if q.mark <= len(q.children) {
			f.Rules = append([]*RuleTrace(nil), q.children[q.mark:]...)
		}
		f.Operands, f.Undefined = operands(&evt, expr, q.defs)
		q.trace.Failed = f
	}
}

// define notes what a compiler variable the expression assigns stands for.
func (q *ruleQuery) define(expr *ast.Expr) {
	if !expr.IsEquality() && !expr.IsAssignment() {
		return
	}
	ts := expr.Terms.([]*ast.Term)
	v, ok := ts[1].Value.(ast.Var)
	if !ok || !v.IsGenerated() {
		return
	}
	if q.defs == nil {
		q.defs = map[ast.Var]*ast.Term{}
	}
	q.defs[v] = ts[2]
}

// operands reads the values a failed expression referred to: the input
// values it names, its variables, and the compiler's variables it uses
// named by what they stand for (defs). A compiler variable that stands
// for nothing known has no name to show and is left out.
func operands(evt *topdown.Event, expr *ast.Expr, defs map[ast.Var]*ast.Term) ([]Operand, bool) {
	var ops []Operand
	undefined := false
	seen := map[string]bool{}
	add := func(name string, v *ast.Term) {
		if !seen[name] {
			seen[name] = true
			ops = append(ops, Operand{Name: name, Value: v})
		}
	}
	var terms []*ast.Term
	switch ts := expr.Terms.(type) {
	case *ast.Term:
		terms = []*ast.Term{ts}
	case []*ast.Term:
		if len(ts) > 0 {
			terms = ts[1:]
		}
	}
	for _, term := range terms {
		ast.WalkTerms(term, func(x *ast.Term) bool {
			switch v := x.Value.(type) {
			case ast.Ref:
				if !v.HasPrefix(ast.InputRootRef) {
					return true
				}
				plugged, ok := evt.Plug(x).Value.(ast.Ref)
				if !ok {
					return true
				}
				// input.roles[_] (some role in input.roles): what is
				// known is input.roles.
				if plugged = plugged.GroundPrefix(); len(plugged) < 2 {
					return true
				}
				name := plugged.String()
				if in := evt.Input(); in != nil {
					if found, err := in.Value.Find(plugged[1:]); err == nil {
						add(name, ast.NewTerm(found))
						return true
					}
				}
				add(name, nil)
				undefined = true
				return true
			case ast.Var:
				name, ok := varName(evt, v)
				if def := defs[v]; !ok && def != nil {
					name, ok = evt.Plug(def).String(), true
				}
				if !ok {
					return false
				}
				if p := evt.Plug(x); p.IsGround() {
					add(name, p)
				}
				return false
			}
			return false
		})
	}
	return ops, undefined
}

// varName is the name a variable is written with; false for the
// compiler's own and for the wildcard.
func varName(evt *topdown.Event, v ast.Var) (string, bool) {
	name := v
	if md, ok := evt.LocalMetadata[v]; ok {
		name = md.Name
	}
	if name.IsWildcard() || name.IsGenerated() || strings.HasPrefix(string(name), "__") {
		return "", false
	}
	return string(name), true
}

// Lines says the explanation in plain words, one statement a line,
// nested lines indented. where turns a policy file's name into the one
// to show (nil shows it as it is).
func (x *Explanation) Lines(where func(file string) string) []string {
	p := explainPrinter{where: where}
	if p.where == nil {
		p.where = func(f string) string { return f }
	}
	return p.explanation(x)
}

// Summary is the explanation in one line, as the decision log gives a
// denial's reason.
func (x *Explanation) Summary(where func(file string) string) string {
	lines := x.Lines(where)
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	if len(lines) == 0 {
		return ""
	}
	if len(lines) == 1 {
		return lines[0]
	}
	return strings.TrimSuffix(lines[0], ":") + ": " + strings.Join(lines[1:], "; ")
}

type explainPrinter struct {
	where func(string) string
	lines []string
}

// Bounds of what an explanation prints: rules nested in rules, and rules
// at one level.
const (
	maxExplainDepth = 4
	maxExplainRules = 8
	maxShownValue   = 200
)

func (p *explainPrinter) add(depth int, format string, args ...any) {
	p.lines = append(p.lines, strings.Repeat("  ", depth)+fmt.Sprintf(format, args...))
}

func (p *explainPrinter) explanation(x *Explanation) []string {
	var defaults, others []*RuleTrace
	for _, r := range x.Rules {
		if r.Rule.Default {
			defaults = append(defaults, r)
		} else {
			others = append(others, r)
		}
	}
	switch {
	case x.Err != nil:
		p.add(0, "%s failed: %s", x.Decision, errorText(x.Err))
	case x.Value == nil:
		p.add(0, "%s is undefined: no rule for it applied and it has no default, so meshid denies:", x.Decision)
	default:
		p.add(0, "%s is %s:", x.Decision, shortValue(ast.NewTerm(x.Value)))
	}
	applied := false
	for _, r := range others {
		if r.Applied {
			applied = true
		}
	}
	p.rules(1, others)
	if !applied && len(others) == 0 && len(defaults) == 0 && x.Err == nil {
		p.add(1, "no rule defines it here: it comes from the data documents")
	}
	for _, d := range defaults {
		if applied {
			continue
		}
		p.add(1, "so the default at %s gave %s", p.at(d.Rule.Location), shortValue(d.Rule.Head.Value))
	}
	if x.Cut {
		p.add(1, "(the trace was longer than %d events; the rest is left out)", maxTraceEvents)
	}
	return p.lines
}

func (p *explainPrinter) rules(depth int, rules []*RuleTrace) {
	for i, r := range rules {
		if i == maxExplainRules {
			p.add(depth, "and %d more rules", len(rules)-i)
			return
		}
		p.rule(depth, r)
	}
}

func (p *explainPrinter) rule(depth int, r *RuleTrace) {
	name := ruleName(r.Rule)
	if r.Applied {
		if r.Value != nil && !ast.Boolean(true).Equal(r.Value.Value) || r.Value == nil {
			p.add(depth, "rule %s at %s applied and gave %s", name, p.at(r.Rule.Location), shortValue(r.Value))
		} else {
			p.add(depth, "rule %s at %s applied: every expression in its body held", name, p.at(r.Rule.Location))
		}
		return
	}
	if r.Failed == nil {
		p.add(depth, "rule %s at %s did not apply", name, p.at(r.Rule.Location))
		return
	}
	f := r.Failed
	how := "was false"
	if f.Undefined {
		how = "was undefined"
	}
	p.add(depth, "rule %s at %s did not apply: at %s, %s %s", name, p.at(r.Rule.Location), p.at(f.Expr.Location), exprText(f.Expr), how)
	for _, op := range f.Operands {
		if op.Value == nil {
			p.add(depth+1, "%s is not in the input", op.Name)
		} else {
			p.add(depth+1, "%s is %s", op.Name, shortValue(op.Value))
		}
	}
	if depth < maxExplainDepth {
		var notApplied []*RuleTrace
		for _, c := range f.Rules {
			if !c.Applied || f.Expr.Negated {
				notApplied = append(notApplied, c)
			}
		}
		p.rules(depth+1, notApplied)
	}
}

func (p *explainPrinter) at(loc *ast.Location) string {
	if loc == nil {
		return "an unknown place"
	}
	return fmt.Sprintf("%s:%d", p.where(loc.File), loc.Row)
}

func ruleName(r *ast.Rule) string {
	name := r.Head.Ref().String()
	if len(r.Head.Args) > 0 {
		name += "(…)"
	}
	return name
}

// exprText is an expression as written in the policy, on one line.
func exprText(e *ast.Expr) string {
	if e.Location != nil && len(e.Location.Text) > 0 {
		return "`" + strings.Join(strings.Fields(string(e.Location.Text)), " ") + "`"
	}
	return "`" + e.String() + "`"
}

func shortValue(t *ast.Term) string {
	if t == nil {
		return "undefined"
	}
	s := t.String()
	if len(s) > maxShownValue {
		s = s[:maxShownValue] + "…"
	}
	return s
}

// errorText is an evaluation error with its place, as OPA has it.
func errorText(err error) string {
	var te *topdown.Error
	if errors.As(err, &te) && te.Location != nil {
		return fmt.Sprintf("%s:%d: %s", te.Location.File, te.Location.Row, te.Message)
	}
	return err.Error()
}

// reason is the one-line explanation of a denial for the decision log.
func (e *Engine) reason(input ast.Value) string {
	return e.Explain(context.Background(), input).Summary(nil)
}
