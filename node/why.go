package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/internal/config"
)

// Replay is one logged decision evaluated again, with OPA's tracer,
// against the policy revision that decided it: `meshid policy why`.
type Replay struct {
	Line        *decisionlog.Line
	Kept        *decisionlog.Kept
	Explanation *authz.Explanation
	// Differs says the replay did not reach the logged result, and why
	// that may be.
	Differs string
}

// Where shows a file of the kept revision as the file it was kept from.
func (r *Replay) Where(file string) string {
	rel, err := filepath.Rel(r.Kept.FilesDir, file)
	if err != nil || !filepath.IsLocal(rel) {
		return file
	}
	return filepath.Join(r.Kept.PolicyDir, rel)
}

// ErrNoRevision is a logged decision that cannot be replayed because its
// line names no policy revision, or its revision is no longer kept.
var ErrNoRevision = errors.New("cannot replay")

// ReplayDecision replays line with the revisions kept in revs.
func ReplayDecision(ctx context.Context, line *decisionlog.Line, revs *decisionlog.Revisions) (*Replay, error) {
	at := fmt.Sprintf("%s:%d", line.File, line.Number)
	if line.Revision == "" {
		return nil, fmt.Errorf("%w: decision %s (%s) names no policy revision: no policy was loaded, or an older meshid logged it", ErrNoRevision, line.DecisionID, at)
	}
	if len(line.Input) == 0 {
		return nil, fmt.Errorf("%w: decision %s (%s) has no input: the request could not be read (%s)", ErrNoRevision, line.DecisionID, at, line.Error)
	}
	kept, err := revs.Load(line.Revision)
	if errors.Is(err, decisionlog.ErrRevisionNotKept) {
		return nil, fmt.Errorf("%w: decision %s (%s) was decided by policy revision %s, which is no longer kept in %s: revisions are pruned once no kept decision log file refers to them", ErrNoRevision, line.DecisionID, at, line.Revision, revs.Dir())
	}
	if err != nil {
		return nil, err
	}
	cfg := authz.Config{Decision: line.Path, RegoV0: kept.RegoVersion == "v0"}
	if kept.PolicyDir != "" {
		cfg.PolicyDir = kept.FilesDir
	}
	version := ast.RegoV1
	if cfg.RegoV0 {
		version = ast.RegoV0
	}
	// A policy set with bundles keeps them beside the policy dir's files.
	if cfg.Bundles, err = authz.LoadKeptBundles(kept.FilesDir, version); err != nil {
		return nil, fmt.Errorf("policy revision %s: %w", line.Revision, err)
	}
	e, err := authz.NewEngine(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("policy revision %s (kept in %s): %w", line.Revision, kept.FilesDir, err)
	}
	if got := e.Policy().Revision; got != line.Revision {
		return nil, fmt.Errorf("policy revision %s: the files kept in %s are revision %s: they were changed after meshid kept them", line.Revision, kept.FilesDir, got)
	}
	input, err := jsonValue(line.Input)
	if err != nil {
		return nil, fmt.Errorf("%s: the input: %w", at, err)
	}
	r := &Replay{Line: line, Kept: kept, Explanation: e.Explain(ctx, input)}
	r.Differs = differs(line, r.Explanation)
	return r, nil
}

// differs says how the replay's result is not the logged one, and what
// may explain it; "" when they agree.
func differs(line *decisionlog.Line, x *authz.Explanation) string {
	var logged ast.Value
	if len(line.Result) > 0 {
		logged, _ = jsonValue(line.Result)
	}
	switch {
	case logged == nil && x.Value == nil:
		return ""
	case logged != nil && x.Value != nil && logged.Compare(x.Value) == 0:
		return ""
	}
	var why []string
	if line.Truncated {
		why = append(why, "the logged input was cut to the decision log's caps")
	}
	if bytes.Contains(line.Input, []byte(`"<masked>"`)) {
		why = append(why, "masked header values (authz.decision_log_mask) are not what the policy saw")
	}
	if line.Error != "" {
		why = append(why, "the decision failed then: "+line.Error)
	}
	why = append(why, "a policy that reads the time or calls out decides differently now")
	show := func(v ast.Value) string {
		if v == nil {
			return "undefined"
		}
		return v.String()
	}
	return fmt.Sprintf("the replay gives %s where the log says %s; %s", show(x.Value), show(logged), strings.Join(why, "; "))
}

func jsonValue(b []byte) (ast.Value, error) {
	var v any
	if err := util.UnmarshalJSON(b, &v); err != nil {
		return nil, err
	}
	return ast.InterfaceToValue(v)
}

// ExplainDecision evaluates the decision for input with the authz section
// of cfg as `meshid run` would (with the bundles kept in its data_dir),
// with OPA's tracer: `meshid policy eval -explain`.
func ExplainDecision(ctx context.Context, cfg config.Config, input ast.Value) (*authz.Explanation, error) {
	engineCfg, _, err := AuthzSettings(cfg.Authz, nil)
	if err != nil {
		return nil, err
	}
	if engineCfg.Bundles, err = KeptBundles(cfg.Authz, cfg.DataDir); err != nil {
		return nil, err
	}
	e, err := authz.NewEngine(ctx, engineCfg)
	if err != nil {
		return nil, err
	}
	return e.Explain(ctx, input), nil
}
