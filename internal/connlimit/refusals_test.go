package connlimit

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/test/syncbuf"
)

// TestRefusalLogIsPaced: a flood of refusals makes one line per logEvery,
// and the next line says how many went unlogged.
func TestRefusalLogIsPaced(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	logs := &syncbuf.Buffer{}
	r := newRefusalLog(slog.New(slog.NewTextHandler(logs, nil)), func() time.Time { return now })
	flood := refusal{reason: reasonPerUID, uid: 12345, pid: 42, held: 3, most: 3}

	for range 1000 {
		r.refused(flood)
	}
	now = now.Add(logEvery - time.Nanosecond)
	r.refused(flood)
	if lines := logs.Lines("connection refused"); len(lines) != 1 || !strings.Contains(lines[0], "unlogged_refusals=0") {
		t.Fatalf("after 1001 refusals within %s: %q, want one line", logEvery, lines)
	}
	now = now.Add(time.Nanosecond)
	r.refused(refusal{reason: reasonTotal, uid: 1000, pid: 7, held: 50, most: 50})
	lines := logs.Lines("connection refused")
	if len(lines) != 2 {
		t.Fatalf("after %s: %d lines, want 2", logEvery, len(lines))
	}
	for _, want := range []string{"limits.connections)", "reason=total", "uid=1000", "pid=7", "held=50", "limit=50", "unlogged_refusals=1000"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("second line %q lacks %q", lines[1], want)
		}
	}
	if !strings.Contains(lines[0], "limits.connections_per_uid") {
		t.Errorf("first line %q does not name the per-uid cap", lines[0])
	}
}
