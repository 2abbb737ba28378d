//go:build reliability

package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/test/harness"
)

// loadResult is what loadgen prints (loadgen.Result).
type loadResult struct {
	Mode       string  `json:"mode"`
	Ops        int     `json:"ops"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error"`
	WallNS     int64   `json:"wall_ns"`
	LatNS      []int64 `json:"lat_ns"`
	PushAtNS   []int64 `json:"push_at_ns"`
	Peak       int     `json:"peak"`
	Closed     int     `json:"closed"`
}

func (r loadResult) wall() time.Duration { return time.Duration(r.WallNS) }

// rate is successful operations per second of wall time.
func (r loadResult) rate() float64 { return float64(r.Ops) / r.wall().Seconds() }

func (r loadResult) lat() latencies {
	l := make(latencies, len(r.LatNS))
	for i, ns := range r.LatNS {
		l[i] = time.Duration(ns)
	}
	return l
}

// loadgenBin is the loadgen binary (built once per Env).
func loadgenBin(t *testing.T, ctx context.Context, env *harness.Env) string {
	t.Helper()
	return tool(t, ctx, env, "loadgen", "./reliability/loadgen")
}

// startLoadgen starts `loadgen MODE ARGS...` under uid (0: root).
func startLoadgen(t *testing.T, ctx context.Context, env *harness.Env, name string, uid uint32, mode string, args ...string) *harness.Process {
	t.Helper()
	p, err := env.Start(ctx, harness.ProcSpec{Name: name, Path: loadgenBin(t, ctx, env), Args: append([]string{mode}, args...), UID: uid})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// runLoadgen runs `loadgen MODE ARGS...` under uid to its end and returns
// its result.
func runLoadgen(t *testing.T, ctx context.Context, env *harness.Env, name string, uid uint32, mode string, args ...string) loadResult {
	t.Helper()
	return waitLoadgen(t, ctx, startLoadgen(t, ctx, env, name, uid, mode, args...))
}

// waitLoadgen waits for a started loadgen to end and returns its result.
func waitLoadgen(t *testing.T, ctx context.Context, p *harness.Process) loadResult {
	t.Helper()
	select {
	case <-p.Done():
	case <-ctx.Done():
		t.Fatalf("%s still running: %v", p.Name, ctx.Err())
	}
	if err := p.Wait(); err != nil {
		t.Fatalf("%s: %v\n%s", p.Name, err, p.LogTail(20))
	}
	var r loadResult
	if err := parseLine(p.Logs(), "result", &r); err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	return r
}

// awaitLine waits until a running loadgen has printed "tag {JSON}" and
// decodes it.
func awaitLine(t *testing.T, ctx context.Context, p *harness.Process, tag string, timeout time.Duration, v any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := parseLine(p.Logs(), tag, v)
		if err == nil {
			return
		}
		select {
		case <-p.Done():
			t.Fatalf("%s exited before printing %q: %v\n%s", p.Name, tag, p.Wait(), p.LogTail(20))
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s printed no %q line in %v: %v", p.Name, tag, timeout, err)
		}
	}
}

func parseLine(out, tag string, v any) error {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), tag+" "); ok {
			return json.Unmarshal([]byte(rest), v)
		}
	}
	return fmt.Errorf("no %q line in its output", tag)
}
