package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/test/harness"
)

// TestDemoOneshot runs `make demo`'s program as DEMO_ONESHOT=1 does and
// checks that it tells the whole story: the sidecars' SVIDs with serial and
// expiry, the allowed call with the caller the backend saw, the denied one
// with its decision id and `meshid policy why`'s answer, an unregistered
// process refused an identity, a rotation with new serials and no failed
// request, and the logs kept where it says.
func TestDemoOneshot(t *testing.T) {
	env := harness.ForTest(t)
	ctx := t.Context()
	bin, err := env.Binary("demo")
	if err != nil {
		paths, buildErr := harness.Build(ctx, env.BinDir, "./test/demo")
		if buildErr != nil {
			t.Fatal(buildErr)
		}
		bin = paths["demo"]
	}
	envoyPath, err := harness.EnvoyPath()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = append(os.Environ(), "DEMO_ONESHOT=1", "MESHID_BIN_DIR="+env.BinDir, "MESHID_ENVOY="+envoyPath)
	began := time.Now()
	b, err := cmd.CombinedOutput()
	out := string(b)
	t.Logf("demo ran in %v", time.Since(began).Round(100*time.Millisecond))
	if m := regexp.MustCompile(`remove them with: +rm -rf (\S+)`).FindStringSubmatch(out); m != nil {
		kept := m[1]
		if _, statErr := os.Stat(filepath.Join(kept, "logs", "meshid.log")); statErr != nil {
			t.Errorf("the demo says its logs are in %s/logs, but: %v", kept, statErr)
		}
		os.RemoveAll(kept)
	}
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	policy := filepath.Join(env.Root, "policies", "envoy", "authz.rego")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`frontend envoy +uid 1102 +spiffe://example.org/ns/demo/sa/frontend\n +serial [0-9a-f]+, expires \S+Z`),
		regexp.MustCompile(`backend envoy +uid 1101 +spiffe://example.org/ns/demo/sa/backend\n +serial [0-9a-f]+, expires \S+Z`),
		regexp.MustCompile(`the backend saw the caller as spiffe://example.org/ns/demo/sa/frontend`),
		regexp.MustCompile(`HTTP/1.1 403 Forbidden`),
		regexp.MustCompile(`decision id ([0-9a-f-]{36}) \(the x-meshid-decision-id header\)`),
		regexp.MustCompile(`decision [0-9a-f-]{36}: denied at `),
		regexp.MustCompile(regexp.QuoteMeta("rule allow at " + policy + ":20 did not apply: at " + policy + ":24, `input.parsed_path == [\"hello\"]` was false")),
		regexp.MustCompile(`no identity issued`),
		regexp.MustCompile(`spiffe://example.org/ns/demo/sa/frontend\n +serial ([0-9a-f]+) -> ([0-9a-f]+), expires`),
		regexp.MustCompile(`spiffe://example.org/ns/demo/sa/backend\n +serial ([0-9a-f]+) -> ([0-9a-f]+), expires`),
		regexp.MustCompile(`[1-9][0-9]* requests through the mesh during the rotation, 0 failed`),
		regexp.MustCompile(`logs of every process: \S+/logs`),
		regexp.MustCompile(`demo done in `),
	} {
		m := want.FindStringSubmatch(out)
		if m == nil {
			t.Errorf("no line matching %s in the demo's output:\n%s", want, out)
			continue
		}
		if len(m) == 3 && m[1] == m[2] {
			t.Errorf("a rotation kept the serial %s: %s", m[1], m[0])
		}
	}
	if strings.Count(out, "\n== ") != 6 {
		t.Errorf("want the demo's 6 steps:\n%s", out)
	}
}
