package identity

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/internal/echo"
	"github.com/meshid/meshid/internal/logpace"
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
	log  *slog.Logger
	pace *logpace.Pacer[refusalKey]
}

func newRefusalLog(log *slog.Logger, clock func() time.Time) *refusalLog {
	return &refusalLog{log: log, pace: logpace.New[refusalKey](refusalInterval, maxRefusalKeys, clock)}
}

// warn logs msg with args for a refusal of uid for reason, unless a line
// for both was logged less than refusalInterval ago.
func (r *refusalLog) warn(uid uint32, reason, msg string, args ...any) {
	if ok, unlogged := r.pace.Allow(refusalKey{uid, reason}); ok {
		r.log.Warn(msg, append(args, "unlogged_refusals", unlogged)...)
	}
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
		out = append(out, echo.Clip(s.String(), maxEcho))
	}
	return out
}
