package harness

import (
	"context"
	"fmt"
	"os/exec"
)

// EnvoyValidate runs the real Envoy in validate mode on a bootstrap file:
// Envoy parses it and builds every listener, cluster and filter, then exits
// without serving. The error carries Envoy's own explanation.
func EnvoyValidate(ctx context.Context, path string) error {
	bin, err := EnvoyPath()
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, bin, "--mode", "validate", "-c", path, "--disable-hot-restart", "-l", "warning").CombinedOutput()
	if err != nil {
		return fmt.Errorf("envoy --mode validate -c %s: %w\n%s", path, err, out)
	}
	return nil
}
