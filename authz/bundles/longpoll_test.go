package bundles

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshid/meshid/internal/config"
)

// longPollServer holds a request for an unchanged bundle until a new one
// is published or the client's wait passes, as OPA's long polling asks.
type longPollServer struct {
	mu      sync.Mutex
	body    []byte
	changed chan struct{} // closed and replaced on publish
}

func (s *longPollServer) publish(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.body = body
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *longPollServer) current() ([]byte, string, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sum := sha256.Sum256(s.body)
	return s.body, `"` + hex.EncodeToString(sum[:8]) + `"`, s.changed
}

func (s *longPollServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, etag, changed := s.current()
	if r.Header.Get("If-None-Match") == etag && strings.Contains(r.Header.Get("Prefer"), "wait=") {
		select {
		case <-changed:
			body, etag, _ = s.current()
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/vnd.openpolicyagent.bundles")
	w.Header().Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(body)
}

// With long polling, a new bundle is in force as soon as it is published,
// not a polling delay later; Run stops with a request held open.
func TestLongPolling(t *testing.T) {
	k := newKey(t, "global")
	lp := &longPollServer{changed: make(chan struct{})}
	lp.publish(build(t, good(&k, "r1", "/a")))
	srv := httptest.NewServer(lp)
	defer srv.Close()

	src := sourceConfig(srv.URL, &k)
	// Delays far longer than the test: only long polling can be quick.
	src.Polling = config.BundlePolling{MinDelay: time.Minute, MaxDelay: time.Minute, LongPollingTimeout: 5 * time.Second}
	n := startNode(t, t.TempDir(), "", src)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.mgr.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	waitRevision := func(rev string) time.Duration {
		t.Helper()
		start := time.Now()
		for n.status(t).Revision != rev {
			if time.Since(start) > 4*time.Second {
				t.Fatalf("revision %s not active after 4s: %+v", rev, n.status(t))
			}
			time.Sleep(10 * time.Millisecond)
		}
		return time.Since(start)
	}
	waitRevision("r1")
	time.Sleep(200 * time.Millisecond) // the next request is held by now
	lp.publish(build(t, good(&k, "r2", "/b")))
	took := waitRevision("r2")
	t.Logf("r2 active %v after it was published (long polling; min_delay 1m)", took.Round(time.Millisecond))
	if !n.allows(t, "/b") || n.allows(t, "/a") {
		t.Error("r2 not enforced")
	}
}
