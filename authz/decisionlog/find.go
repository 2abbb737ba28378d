package decisionlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"
)

// Line is one decision as a decision log line holds it.
type Line struct {
	DecisionID string          `json:"decision_id"`
	Timestamp  time.Time       `json:"timestamp"`
	Path       string          `json:"path"`
	Revision   string          `json:"revision"`
	Input      json.RawMessage `json:"input"`
	Result     json.RawMessage `json:"result"`
	Allowed    bool            `json:"allowed"`
	DryRun     bool            `json:"dry_run"`
	Error      string          `json:"error"`
	Reason     string          `json:"reason"`
	Truncated  bool            `json:"truncated"`
	// File and Number say where the line is (Number counts from 1).
	File   string `json:"-"`
	Number int    `json:"-"`
}

// Why a decision is not found in a decision log.
var (
	// ErrRotatedAway: the decision is older than the oldest line kept.
	ErrRotatedAway = errors.New("rotated away")
	// ErrUnknownDecision: no line has the id, and the log's files span
	// the time it was made (or the id does not say when that was).
	ErrUnknownDecision = errors.New("unknown decision")
)

// maxScannedFiles bounds the rotated files Find looks for when it is not
// told how many are kept.
const maxScannedFiles = 1000

// Find looks for the line of decision id in the decision log at path and
// its rotated files, path.1 to path.maxFiles (0: as many as there are).
// When there is none it says which of ErrRotatedAway and
// ErrUnknownDecision holds, and why, from the time the id was made at.
func Find(path string, maxFiles int, id string) (*Line, error) {
	if maxFiles <= 0 {
		maxFiles = maxScannedFiles
	}
	prefix := []byte(`{"decision_id":"` + id + `"`)
	var files []string
	for n := 0; n <= maxFiles; n++ {
		p := RotatedPath(path, n)
		l, err := findIn(p, prefix)
		if errors.Is(err, fs.ErrNotExist) {
			if n == 0 {
				return nil, fmt.Errorf("decision log %s: %w", path, err)
			}
			break
		}
		if err != nil {
			return nil, err
		}
		if l != nil {
			return l, nil
		}
		files = append(files, p)
	}
	oldestFile := files[len(files)-1]
	oldest, hasOldest := FirstLineTime(oldestFile)
	made, hasTime := IDTime(id)
	span := fmt.Sprintf("%s (%d file", path, len(files))
	if len(files) > 1 {
		span += "s, to " + oldestFile
	}
	span += ")"
	switch {
	case !hasTime:
		return nil, fmt.Errorf("%w: no decision %s in %s; the id is not one meshid makes (those say when they were made), so whether it was rotated away cannot be told", ErrUnknownDecision, id, span)
	case !hasOldest:
		return nil, fmt.Errorf("%w: no decision %s (made at %s) in %s, which holds no decision yet", ErrUnknownDecision, id, stamp(made), span)
	case made.Before(oldest.Truncate(time.Millisecond)):
		return nil, fmt.Errorf("%w: decision %s was made at %s, before the oldest line kept (%s, in %s): its lines were rotated out of %s (authz.decision_log_max_files)", ErrRotatedAway, id, stamp(made), stamp(oldest), oldestFile, path)
	default:
		return nil, fmt.Errorf("%w: no decision %s in %s, which holds the decisions from %s on; made at %s, it was not logged: sampled out (authz.decision_log_sample_rate), dropped while the log's queue was full (meshid_authz_decision_logs_dropped_total), or decided by another meshid", ErrUnknownDecision, id, span, stamp(oldest), stamp(made))
	}
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// findIn is the line of path that starts with prefix; nil when none does.
func findIn(path string, prefix []byte) (*Line, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	for n := 1; ; n++ {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A long line: whether it is the one is in its first bytes.
			match := bytes.HasPrefix(line, prefix)
			rest, err := readRest(r)
			if err != nil && !errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("%s:%d: %w", path, n, err)
			}
			if match {
				return parseLine(path, n, append(append([]byte{}, line...), rest...))
			}
			continue
		}
		if bytes.HasPrefix(line, prefix) {
			return parseLine(path, n, line)
		}
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
}

// readRest reads the remainder of a line longer than r's buffer.
func readRest(r *bufio.Reader) ([]byte, error) {
	var rest []byte
	for {
		b, err := r.ReadSlice('\n')
		rest = append(rest, b...)
		if !errors.Is(err, bufio.ErrBufferFull) {
			return rest, err
		}
	}
}

func parseLine(path string, n int, b []byte) (*Line, error) {
	var l Line
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("%s:%d: not a decision log line: %w", path, n, err)
	}
	l.File, l.Number = path, n
	return &l, nil
}

// ValidID reports whether s has the form of a decision id (a UUID), so
// that a typo is told apart from an id that was never logged.
func ValidID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case !strings.ContainsRune("0123456789abcdef", c):
			return false
		}
	}
	return true
}
