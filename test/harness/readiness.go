package harness

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Readyz returns meshid's /readyz status and body: 200 "ready", or 503
// with the reason, such as a CA that cannot rotate.
func (m *Meshid) Readyz(ctx context.Context) (int, string, error) {
	status, body, err := Get(ctx, "http://"+m.AdminAddr+"/readyz")
	if err != nil {
		return 0, "", fmt.Errorf("harness: meshid /readyz: %w", err)
	}
	return status, string(body), nil
}

// WaitReadyz polls /readyz until it answers status with a body containing
// every one of want, or until timeout; the error then says what the last
// answer was.
func (m *Meshid) WaitReadyz(ctx context.Context, timeout time.Duration, status int, want ...string) (string, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		got, body, err := m.Readyz(ctx)
		if err == nil && got == status && containsAll(body, want) {
			return body, nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d %s", got, snippet([]byte(body)))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", m.failure(fmt.Errorf("harness: meshid /readyz never answered %d with %q in %v; last: %s", status, want, timeout, last))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
