//go:build reliability

package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshid/meshid/test/authztest"
	"github.com/meshid/meshid/test/harness"
)

// TestAuthzHostileBodies is finding 5 of issue 13: whoever can reach the
// ext_authz port decides how much meshid parses and how much it logs. A
// 3 MiB body is left unparsed (max_body_bytes) and the request decided at
// once; a body nested 500,000 deep or holding 500,000 values is denied
// within the eval timeout, failing closed; a decision log line stays
// within its caps whatever the request carries; and the decision log file
// rotates at its size, keeping the files it may.
func TestAuthzHostileBodies(t *testing.T) {
	const (
		maxLogBytes = 1 << 20 // decision_log_max_bytes, the smallest allowed
		maxLogFiles = 2
		// decision_log_max_input_bytes is 64 KiB: a line may hold that
		// much input plus the rest of the line.
		maxLine = 80 << 10
	)
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	policyDir, err := env.MkdirAll("policies")
	if err != nil {
		t.Fatal(err)
	}
	// A parsed 3 MiB body would have a "k" and be denied.
	if err := harness.WritePolicy(policyDir, "authz.rego", "package envoy.authz\n\ndefault allow := false\n\nallow if {\n\tinput.parsed_path == [\"hello\"]\n\tnot input.parsed_body.k\n}\n"); err != nil {
		t.Fatal(err)
	}
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: harness.DemoEntries(), PolicyDir: policyDir})
	if err != nil {
		t.Fatal(err)
	}
	decisionLog := filepath.Join(env.Dir, "decisions.jsonl")
	if err := m.ConfigureAuthz(ctx, map[string]any{
		"decision_log":           decisionLog,
		"decision_log_max_bytes": maxLogBytes,
		"decision_log_max_files": maxLogFiles,
	}); err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(m.AuthzAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := authv3.NewAuthorizationClient(cc)
	check := func(body string, headers map[string]string) (codes.Code, time.Duration) {
		t.Helper()
		req := authztest.DemoCheck("/hello")
		h := req.Attributes.Request.Http
		h.Method = "POST"
		h.Body = body
		if body != "" {
			h.Headers["content-type"] = "application/json"
		}
		for k, v := range headers {
			h.Headers[k] = v
		}
		start := time.Now()
		resp, err := client.Check(ctx, req, grpc.MaxCallSendMsgSize(8<<20))
		took := time.Since(start)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		return codes.Code(resp.GetStatus().GetCode()), took
	}

	check(`{"warm": "up"}`, nil)
	_, quiet := check(`{"small": true}`, nil)
	var lines []string
	for _, c := range []struct {
		name, body, log string
		headers         map[string]string
		want            codes.Code
	}{
		// The control: under max_body_bytes, the body is parsed.
		{name: "a 512 KiB body is parsed (and this policy denies a k)", body: `{"k":"` + strings.Repeat("x", 512<<10) + `"}`, want: codes.PermissionDenied},
		{name: "a 3 MiB body is not parsed, and the request decided", body: `{"k":"` + strings.Repeat("x", 3<<20) + `"}`, want: codes.OK},
		{name: "a body nested 500,000 deep is denied", body: strings.Repeat("[", 500_000) + strings.Repeat("]", 500_000), log: "too deep", want: codes.PermissionDenied},
		{name: "a body of 500,000 values is denied", body: "[" + strings.Repeat("0,", 499_999) + "0]", log: "too many values", want: codes.PermissionDenied},
		{name: "16 headers of 64 KiB are logged cut", headers: bigHeaders(16, 64<<10), want: codes.OK},
	} {
		got, took := check(c.body, c.headers)
		if got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
		if c.log != "" && !logged(m.Logs(), c.log) {
			t.Errorf("%s: meshid's log does not say %q", c.name, c.log)
		}
		lines = append(lines, fmt.Sprintf("%s: %v in %v", c.name, got, round(took)))
		t.Logf("%s: %v in %v", c.name, got, round(took))
	}

	// Enough decisions with large headers (each line ~10 KiB once cut) to
	// fill more files than are kept.
	const rotating = 400
	for range rotating {
		if got, _ := check("", bigHeaders(1, 60<<10)); got != codes.OK {
			t.Fatalf("check with a 60 KiB header: %v", got)
		}
	}
	var files []string
	waitFor(t, ctx, 10*time.Second, "the decision log to be written and rotated", func() bool {
		files, _ = filepath.Glob(decisionLog + "*")
		return len(files) == 1+maxLogFiles
	})
	time.Sleep(500 * time.Millisecond) // the last lines of the queue
	longest, total, cut := 0, 0, 0
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > maxLogBytes {
			t.Errorf("%s is %d bytes, past decision_log_max_bytes %d", filepath.Base(f), fi.Size(), maxLogBytes)
		}
		n, long, truncated := jsonLines(t, f)
		total, cut, longest = total+n, cut+truncated, max(longest, long)
	}
	if _, err := os.Stat(fmt.Sprintf("%s.%d", decisionLog, maxLogFiles+1)); err == nil {
		t.Errorf("%s.%d exists: more rotated files than decision_log_max_files %d", decisionLog, maxLogFiles+1, maxLogFiles)
	}
	if sent := rotating + 7; total >= sent {
		t.Errorf("the decision log files hold all %d lines: the oldest file was never removed", sent)
	}
	if longest > maxLine {
		t.Errorf("a decision log line is %d bytes, above %d", longest, maxLine)
	}
	if dropped := metric(t, ctx, m, "meshid_authz_decision_logs_dropped_total"); dropped != 0 {
		t.Errorf("%.0f decision log lines dropped", dropped)
	}
	t.Logf("decision log: %d files (%v), %d whole JSON lines, %d cut, longest %d bytes", len(files), files, total, cut, longest)
	report(t, "ext_authz with hostile bodies: 3 MiB unparsed and decided, 500,000-deep and 500,000-value bodies denied (fail closed); decision log lines capped, the file rotated at decision_log_max_bytes keeping decision_log_max_files",
		"small body %v; %s; log: %d files <= %d KiB, longest line %d bytes, %d of %d lines cut",
		round(quiet), strings.Join(lines, "; "), len(files), maxLogBytes>>10, longest, cut, total)
}

func bigHeaders(n, size int) map[string]string {
	h := map[string]string{}
	for i := range n {
		h[fmt.Sprintf("x-big-%d", i)] = strings.Repeat("v", size)
	}
	return h
}

// jsonLines checks that every line of a decision log file is a JSON
// object with a decision id, and returns how many there are, the longest
// and how many say something was cut.
func jsonLines(t *testing.T, path string) (n, longest, truncated int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var line struct {
			DecisionID string `json:"decision_id"`
			Truncated  bool   `json:"truncated"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil || line.DecisionID == "" {
			t.Errorf("%s:%d is not a whole decision line (%v): %.200s", filepath.Base(path), n+1, err, sc.Bytes())
		}
		n++
		longest = max(longest, len(sc.Bytes()))
		if line.Truncated {
			truncated++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n, longest, truncated
}
