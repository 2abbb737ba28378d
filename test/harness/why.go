package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// PolicyWhy runs `meshid policy why -config meshid.yaml ID` as root, as an
// operator on m's host would, and returns what it printed and its exit
// error.
func (m *Meshid) PolicyWhy(ctx context.Context, id string) (string, error) {
	return m.CLI(ctx, 0, "policy", "why", "-config", m.ConfigPath, id)
}

// LoggedDecision is a decision log line, as far as tests read one.
type LoggedDecision struct {
	DecisionID string `json:"decision_id"`
	Revision   string `json:"revision"`
	Allowed    bool   `json:"allowed"`
	Reason     string `json:"reason"`
}

// WaitDecision waits until m's decision log (MeshidOptions.DecisionLog)
// holds the line of decision id, which meshid writes shortly after the
// response, and returns it.
func (m *Meshid) WaitDecision(ctx context.Context, id string) (*LoggedDecision, error) {
	if m.DecisionLogPath == "" {
		return nil, fmt.Errorf("harness: meshid %s keeps no decision log (MeshidOptions.DecisionLog)", m.name)
	}
	for {
		if d, err := findDecision(m.DecisionLogPath, id); err != nil || d != nil {
			return d, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("harness: decision %s not in %s: %w", id, m.DecisionLogPath, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func findDecision(path, id string) (*LoggedDecision, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("harness: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var d LoggedDecision
		if json.Unmarshal(sc.Bytes(), &d) == nil && d.DecisionID == id {
			return &d, nil
		}
	}
	return nil, sc.Err()
}
