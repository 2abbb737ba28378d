package authz

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Defaults of DecisionLogOptions.
const (
	DefaultDecisionLogQueue = 1024
	maskedValue             = "<masked>"
)

// DefaultMaskedHeaders carry credentials: their values never reach a
// decision log unless the operator configures otherwise.
var DefaultMaskedHeaders = []string{"authorization", "proxy-authorization", "cookie"}

// DecisionLogOptions configure a DecisionLog.
type DecisionLogOptions struct {
	// MaskHeaders are request header names whose values are replaced by
	// "<masked>" in the logged input. Nil means DefaultMaskedHeaders; an
	// empty, non-nil list masks nothing.
	MaskHeaders []string
	// QueueSize bounds the decisions waiting to be written; when it is
	// full, decisions are dropped and counted. Zero means
	// DefaultDecisionLogQueue.
	QueueSize int
	// SampleRate is the fraction of decisions logged, in (0, 1]; zero
	// means all. Decisions that failed (no decision reached) are always
	// logged.
	SampleRate float64
	// Log reports write errors; nil discards.
	Log *slog.Logger
}

// DecisionLog writes one JSON line per decision: decision id, time, the
// decision path, the input (masked), the result, and how long it took.
// Check only queues the decision; Run encodes and writes, so a slow disk
// costs dropped log lines, never slower answers to Envoy.
type DecisionLog struct {
	queue   chan *Result
	mask    map[string]bool
	sample  float64
	log     *slog.Logger
	dropped atomic.Uint64
}

// NewDecisionLog returns a log that queues decisions; Run writes them.
func NewDecisionLog(o DecisionLogOptions) *DecisionLog {
	d := &DecisionLog{mask: map[string]bool{}, sample: o.SampleRate, log: o.Log}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultDecisionLogQueue
	}
	d.queue = make(chan *Result, o.QueueSize)
	if o.MaskHeaders == nil {
		o.MaskHeaders = DefaultMaskedHeaders
	}
	for _, h := range o.MaskHeaders {
		d.mask[strings.ToLower(h)] = true
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	return d
}

// Log queues r, or drops and counts it when the queue is full.
func (d *DecisionLog) Log(r *Result) {
	if r.Err == nil && d.sample > 0 && d.sample < 1 && rand.Float64() >= d.sample {
		return
	}
	select {
	case d.queue <- r:
	default:
		d.dropped.Add(1)
	}
}

// Dropped counts the decisions not logged because the queue was full.
func (d *DecisionLog) Dropped() uint64 { return d.dropped.Load() }

// Run writes queued decisions to out until ctx ends, then writes what is
// still queued and returns.
func (d *DecisionLog) Run(ctx context.Context, out io.Writer) error {
	w := bufio.NewWriter(out)
	failing := false
	write := func(r *Result) {
		line, err := d.encode(r)
		if err == nil {
			_, err = w.Write(line)
		}
		if err == nil && len(d.queue) == 0 {
			err = w.Flush()
		}
		switch {
		case err != nil && !failing:
			d.log.Error("authz: cannot write the decision log; decisions are lost until it works again", "err", err)
			failing = true
		case err == nil && failing:
			d.log.Info("authz: decision log writes again")
			failing = false
		}
	}
	for {
		select {
		case r := <-d.queue:
			write(r)
		case <-ctx.Done():
			for {
				select {
				case r := <-d.queue:
					write(r)
				default:
					return w.Flush()
				}
			}
		}
	}
}

// decisionLine is the JSON of one decision, close to OPA's decision log
// event so the same tools read both.
type decisionLine struct {
	DecisionID string    `json:"decision_id"`
	Timestamp  time.Time `json:"timestamp"`
	Path       string    `json:"path,omitempty"`
	Input      any       `json:"input,omitempty"`
	Result     any       `json:"result,omitempty"`
	Allowed    bool      `json:"allowed"`
	DryRun     bool      `json:"dry_run,omitempty"`
	Error      string    `json:"error,omitempty"`
	DurationNS int64     `json:"duration_ns"`
}

func (d *DecisionLog) encode(r *Result) ([]byte, error) {
	line := decisionLine{
		DecisionID: r.ID,
		Timestamp:  r.Time.UTC(),
		Path:       r.Path,
		Allowed:    r.Allowed,
		DryRun:     r.DryRun,
		DurationNS: r.Duration.Nanoseconds(),
	}
	if r.Err != nil {
		line.Error = r.Err.Error()
	}
	var err error
	if r.Input != nil {
		if line.Input, err = ast.JSON(r.Input); err != nil {
			return nil, err
		}
		d.maskInput(line.Input)
	}
	if r.Decision != nil {
		if line.Result, err = ast.JSON(r.Decision); err != nil {
			return nil, err
		}
	}
	b, err := json.Marshal(line)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// maskInput replaces the values of masked headers in a JSON input
// document; ast.JSON made a fresh copy, so the input terms are untouched.
func (d *DecisionLog) maskInput(in any) {
	headers, _ := dig(in, "attributes", "request", "http", "headers").(map[string]any)
	for name := range headers {
		if d.mask[name] {
			headers[name] = maskedValue
		}
	}
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
