package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"

	"github.com/meshid/meshid/internal/atomicfile"
)

// ConfigureAuthz sets keys of meshid.yaml's authz section, beside the
// address and policy_dir the harness writes (say, "decision_log",
// "xfcc": map[string]any{"trust": true}), and restarts meshid on the new
// config. Run it before starting the Envoys that use this meshid, or they
// see the restart.
func (m *Meshid) ConfigureAuthz(ctx context.Context, keys map[string]any) error {
	data, err := os.ReadFile(m.ConfigPath)
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("harness: %s: %w", m.ConfigPath, err)
	}
	authz, _ := doc["authz"].(map[string]any)
	if authz == nil {
		authz = map[string]any{}
		doc["authz"] = authz
	}
	for k, v := range keys {
		authz[k] = v
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	if err := atomicfile.Write(m.ConfigPath, out, 0o644); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return m.Restart(ctx)
}

// WritePolicy replaces one file of a policy dir the way an editor or a
// ConfigMap update does: written beside it and renamed over it, so meshid's
// reload never reads half a file.
func WritePolicy(dir, name, content string) error {
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	if err := atomicfile.Write(path, []byte(content), 0o644); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return nil
}
