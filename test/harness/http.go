package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// client talks only to local processes: no proxy from the environment (an
// HTTP_PROXY would route a test around the mesh) and no idle connections
// left behind for goleak to find.
var client = &http.Client{
	Timeout:   5 * time.Second,
	Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
}

// Get sends GET url and returns the status code and body.
func Get(ctx context.Context, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

// WaitHTTP polls GET url with a short backoff until it answers wantStatus or
// ctx ends; the error then says what the last attempt got. Without a
// deadline on ctx it waits forever.
func WaitHTTP(ctx context.Context, url string, wantStatus int) error {
	delay := 10 * time.Millisecond
	var last string
	for {
		status, body, err := Get(ctx, url)
		switch {
		case err == nil && status == wantStatus:
			return nil
		case err != nil:
			last = err.Error()
		default:
			last = fmt.Sprintf("status %d: %s", status, snippet(body))
		}
		select {
		case <-ctx.Done():
			cause := context.Cause(ctx)
			if errors.Is(cause, context.DeadlineExceeded) || errors.Is(cause, context.Canceled) {
				return fmt.Errorf("GET %s never answered %d (%w); last attempt: %s", url, wantStatus, cause, last)
			}
			return fmt.Errorf("GET %s never answered %d: %w; last attempt: %s", url, wantStatus, cause, last)
		case <-time.After(delay):
		}
		delay = min(delay*2, 250*time.Millisecond)
	}
}

// waitReady is WaitHTTP that gives up at once when p exits, and reports p's
// log tail on failure.
func (e *Env) waitReady(ctx context.Context, p *Process, url string, wantStatus int) error {
	ctx, cancel := context.WithTimeoutCause(ctx, e.readyTimeout,
		fmt.Errorf("not ready after %v", e.readyTimeout))
	defer cancel()
	ctx, cancelExit := context.WithCancelCause(ctx)
	defer cancelExit(nil)
	go func() {
		select {
		case <-p.done:
			cancelExit(fmt.Errorf("%s exited", p.Name))
		case <-ctx.Done():
		}
	}()
	if err := WaitHTTP(ctx, url, wantStatus); err != nil {
		return p.failure(fmt.Errorf("harness: %s not ready: %w", p.Name, err))
	}
	return nil
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
