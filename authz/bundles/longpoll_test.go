package bundles

import (
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
	t.Cleanup(srv.Close) // after run's cleanup: Close waits for the held request

	src := sourceConfig(srv.URL, &k)
	// Delays far longer than the test: only long polling can be quick.
	src.Polling = config.BundlePolling{MinDelay: time.Minute, MaxDelay: time.Minute, LongPollingTimeout: 5 * time.Second}
	n := startNode(t, t.TempDir(), "", src)
	n.run(t)

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

// A service that holds a long poll and never answers (or a proxy that
// does) is not waited for until a restart: OPA's downloader has no
// timeout while it long-polls, and meshid starts a new one once a poll
// has taken longer than any may. The stall is a download failure, with
// its reason, and the service is asked again.
func TestStalledLongPollIsAskedAgain(t *testing.T) {
	k := newKey(t, "global")
	body := build(t, good(&k, "r1", "/a"))
	var mu sync.Mutex
	requests, hang := 0, true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		requests++
		stall := hang
		mu.Unlock()
		if stall {
			<-r.Context().Done()
			return
		}
		w.Header().Set("Content-Type", "application/gzip")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	src := sourceConfig(srv.URL, &k)
	src.Polling.LongPollingTimeout = time.Second
	n := startNode(t, t.TempDir(), "", src)
	n.mgr.sources[0].stallSlack = time.Second // a poll may take 1s + 1s + 1s
	n.run(t)

	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s: %+v", what, n.status(t))
			}
		}
	}
	waitUntil("the stall counted as a download failure", func() bool {
		f := n.status(t).LastFailure
		return f != nil && f.Reason == ReasonDownload && strings.Contains(f.Error, "no answer for")
	})
	if err := n.mgr.Ready(); err == nil || !strings.Contains(err.Error(), "no answer for") {
		t.Errorf("Ready = %v, want the stall as the reason", err)
	}
	mu.Lock()
	hang = false
	mu.Unlock()
	waitUntil("r1 downloaded once the service answers", func() bool { return n.status(t).Active })
	mu.Lock()
	defer mu.Unlock()
	if requests < 2 {
		t.Errorf("%d requests: the service was not asked again", requests)
	}
}
