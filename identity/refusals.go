package identity

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/meshid/meshid/attestor"
)

// Refusals are logged at WARN so that an operator can write the missing
// entry, but any local user can ask to be refused thousands of times a
// second. So the lines for one uid and one reason are limited to one per
// refusalInterval, each saying how many were left out since the last
// (unlogged_refusals=N, as the socket's connection caps log theirs). The
// metrics count every refusal.
const refusalInterval = 10 * time.Second

// maxRefusalKeys bounds the (uid, reason) pairs remembered. Only root can
// run processes under that many uids; past it lines are not limited.
const maxRefusalKeys = 1024

// reasonNoEntry is the refusal of a caller attested but matched by no entry.
const reasonNoEntry = "no_matching_entry"

type refusalKey struct {
	uid    uint32
	reason string
}

// refusalLog writes the WARN lines of refused callers, limited per uid and
// reason on the manager's clock.
type refusalLog struct {
	log   *slog.Logger
	clock func() time.Time

	mu   sync.Mutex
	seen map[refusalKey]*refusalWindow
}

type refusalWindow struct {
	logged   time.Time // when the last line was written
	unlogged int       // lines left out since
}

func newRefusalLog(log *slog.Logger, clock func() time.Time) *refusalLog {
	return &refusalLog{log: log, clock: clock, seen: map[refusalKey]*refusalWindow{}}
}

// warn logs msg with args for a refusal of uid for reason, unless a line
// for both was logged less than refusalInterval ago.
func (r *refusalLog) warn(uid uint32, reason, msg string, args ...any) {
	now := r.clock()
	k := refusalKey{uid, reason}
	r.mu.Lock()
	w, ok := r.seen[k]
	if ok && now.Sub(w.logged) < refusalInterval {
		w.unlogged++
		r.mu.Unlock()
		return
	}
	unlogged := 0
	if ok {
		unlogged = w.unlogged
	} else {
		w = r.track(k, now)
	}
	if w != nil {
		*w = refusalWindow{logged: now}
	}
	r.mu.Unlock()
	r.log.Warn(msg, append(args, "unlogged_refusals", unlogged)...)
}

// track remembers a new key, forgetting those whose interval has passed
// when the map is full; nil when it stays full.
func (r *refusalLog) track(k refusalKey, now time.Time) *refusalWindow {
	if len(r.seen) >= maxRefusalKeys {
		for old, w := range r.seen {
			// A window that passed with lines left out loses their
			// count; the metrics still have them.
			if now.Sub(w.logged) >= refusalInterval {
				delete(r.seen, old)
			}
		}
		if len(r.seen) >= maxRefusalKeys {
			return nil
		}
	}
	w := &refusalWindow{}
	r.seen[k] = w
	return w
}

// Log lines name what a caller presented; much of it is the caller's to
// choose (its executable's path, its container's labels and environment),
// so a line holds at most maxLoggedSelectors of them, each cut to
// maxEcho bytes.
const (
	maxLoggedSelectors = 64
	maxEcho            = 256
)

func loggedSelectors(sels []attestor.Selector) []string {
	out := make([]string, 0, min(len(sels), maxLoggedSelectors+1))
	for i, s := range sels {
		if i == maxLoggedSelectors {
			out = append(out, fmt.Sprintf("… and %d more", len(sels)-i))
			break
		}
		out = append(out, clip(s.String()))
	}
	return out
}

// clip cuts s to maxEcho bytes (at a character boundary), saying how long
// it was.
func clip(s string) string {
	if len(s) <= maxEcho {
		return s
	}
	cut := maxEcho
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", s[:cut], len(s))
}
