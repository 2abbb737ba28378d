package harness

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/meshid/meshid/authz/decisionlog"
)

// PolicyWhy runs `meshid policy why -config meshid.yaml ID` as root, as an
// operator on m's host would, and returns what it printed and its exit
// error.
func (m *Meshid) PolicyWhy(ctx context.Context, id string) (string, error) {
	return m.CLI(ctx, 0, "policy", "why", "-config", m.ConfigPath, id)
}

// WaitDecision waits until m's decision log (MeshidOptions.DecisionLog)
// holds the line of decision id, which meshid writes shortly after the
// response, and returns it.
func (m *Meshid) WaitDecision(ctx context.Context, id string) (*decisionlog.Line, error) {
	if m.DecisionLogPath == "" {
		return nil, fmt.Errorf("harness: meshid %s keeps no decision log (MeshidOptions.DecisionLog)", m.name)
	}
	for {
		l, err := decisionlog.Find(m.DecisionLogPath, 0, id)
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, decisionlog.ErrUnknownDecision) && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("harness: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("harness: decision %s not in %s: %w", id, m.DecisionLogPath, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
