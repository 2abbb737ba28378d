package decisionlog

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Record is one decision as the log writes it. The server that reached
// the decision fills it; the log only reads it, from Add on.
type Record struct {
	ID string
	// Allowed is what the policy decided; with dry run, Envoy is told to
	// allow even when Allowed is false.
	Allowed bool
	DryRun  bool
	// Decision is the policy's value; nil when none was reached.
	Decision ast.Value
	// Err says why no decision was reached (Allowed is then false).
	Err   error
	Input ast.Value // nil when the request could not be described
	Path  string    // the decision reference evaluated
	// Policy is the policy set that decided; nil when none was loaded.
	// The line names its revision, and the log keeps the set in
	// Options.Revisions for replay.
	Policy   *PolicySet
	Time     time.Time
	Duration time.Duration
	// Reason, when set, says in one line why the decision was what it
	// was. The log calls it on its own goroutine, after the response has
	// gone to Envoy, and only when it is keeping up (see Options).
	Reason func() string
}

// Defaults of Options. A field of 8 KiB keeps whole what a request
// carries when nobody is trying (a JWT, a client certificate, the 8 KiB
// body meshid's sidecars send); an input of 64 KiB is several such fields
// and every usual header.
const (
	DefaultQueue         = 1024
	DefaultMaxFieldBytes = 8 << 10
	DefaultMaxInputBytes = 64 << 10
	maskedValue          = "<masked>"
)

// DefaultMaskedHeaders carry credentials: their values never reach a
// decision log unless the operator configures otherwise.
var DefaultMaskedHeaders = []string{"authorization", "proxy-authorization", "cookie"}

// Options configure a Log.
type Options struct {
	// MaskHeaders are request header names whose values are replaced by
	// "<masked>" in the logged input. Nil means DefaultMaskedHeaders; an
	// empty, non-nil list masks nothing.
	MaskHeaders []string
	// QueueSize bounds the decisions waiting to be written; when it is
	// full, decisions are dropped and counted. Zero means DefaultQueue.
	QueueSize int
	// SampleRate is the fraction of decisions logged, in (0, 1]; zero
	// means all. Decisions that failed (no decision reached) are always
	// logged.
	SampleRate float64
	// MaxFieldBytes caps each string of the logged input and result (a
	// body, a header value, a path), the error, and parsed_body and the
	// result as a whole (their JSON). A longer string keeps its start and
	// gains a marker with its length; a longer parsed_body or result
	// becomes a marker with its length. Zero means DefaultMaxFieldBytes.
	MaxFieldBytes int
	// MaxInputBytes caps the logged input as a whole (its JSON, after the
	// field caps); a longer one becomes a marker with its length. Zero
	// means DefaultMaxInputBytes.
	MaxInputBytes int
	// Revisions keeps the policy set of every logged decision, so that
	// `meshid policy why` can replay it; nil keeps none. Revisions no
	// kept log file refers to are pruned: see Run.
	Revisions *Revisions
	// KeepRevisions is how many revisions are kept when the log is
	// written somewhere meshid does not rotate (stderr), so cannot tell
	// which lines are still kept. Zero means DefaultKeepRevisions.
	KeepRevisions int
	// Shipper, when set, ships every logged decision to a collector as
	// well, masked, sampled and capped as the lines are.
	Shipper *Shipper
	// Log reports write errors; nil discards.
	Log *slog.Logger
}

// DefaultKeepRevisions is Options.KeepRevisions' default: policy sets
// change a few times a day, and a set is a few files.
const DefaultKeepRevisions = 32

// Rotating is a log output that rotates (File): the log prunes revisions
// by what its files still hold.
type Rotating interface {
	Rotations() uint64
	// OldestLine is the time of the first line of the oldest file kept.
	OldestLine() (time.Time, bool)
}

// Log writes one JSON line per decision: decision id, time, the decision
// path, the input (masked, capped), the result, and how long it took. Add only queues the decision; Run encodes and writes, so a slow
// disk costs dropped log lines, never slower answers to Envoy. What one
// line may take is bounded by the caps, whatever the request.
type Log struct {
	queue              chan *Record
	mask               map[string]bool
	sample             float64
	maxField, maxInput int
	log                *slog.Logger
	dropped            atomic.Uint64
	revs               *Revisions
	keepRevs           int
	ship               *Shipper
}

// New returns a log that queues decisions; Run writes them.
func New(o Options) *Log {
	d := &Log{mask: map[string]bool{}, sample: o.SampleRate, log: o.Log, maxField: o.MaxFieldBytes, maxInput: o.MaxInputBytes, revs: o.Revisions, keepRevs: o.KeepRevisions, ship: o.Shipper}
	if d.keepRevs <= 0 {
		d.keepRevs = DefaultKeepRevisions
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueue
	}
	if d.maxField <= 0 {
		d.maxField = DefaultMaxFieldBytes
	}
	if d.maxInput <= 0 {
		d.maxInput = DefaultMaxInputBytes
	}
	d.queue = make(chan *Record, o.QueueSize)
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

// Add queues r, or drops and counts it when the queue is full. r must not
// change after: Run reads it later, on its own goroutine.
func (d *Log) Add(r *Record) {
	if r.Err == nil && d.sample > 0 && d.sample < 1 && rand.Float64() >= d.sample {
		return
	}
	select {
	case d.queue <- r:
	default:
		d.dropped.Add(1)
	}
}

// Shipper is Options.Shipper, nil when the log ships nothing.
func (d *Log) Shipper() *Shipper { return d.ship }

// Dropped counts the decisions not logged because the queue was full.
func (d *Log) Dropped() uint64 { return d.dropped.Load() }

// Batching: lines are written to out in batches of whole lines, up to
// batchBytes or whatever is queued, so that a writer that rotates files
// (File) never sees half a line. A batch buffer grown past
// maxKeptBatch by a burst is let go rather than kept.
const (
	batchBytes   = 64 << 10
	maxKeptBatch = 4 << 20
)

// Run writes queued decisions to out until ctx ends, then writes what is
// still queued and returns. Each Write to out is whole lines; a nil out
// writes none (a log that only ships). With Options.Shipper, Run also
// hands each decision's event to it and runs its uploads, and on its
// way out lets it flush for its FlushTimeout at most.
//
// It keeps the policy revision of each line in Options.Revisions before
// writing the line, and prunes the revisions no kept line refers to: when
// out rotates (Rotating), at the start and after every rotation, those
// last logged before the oldest file's first line; otherwise, at the
// start, all but the KeepRevisions logged last.
func (d *Log) Run(ctx context.Context, out io.Writer) error {
	w := &lineWriter{maxField: d.maxField, maxInput: d.maxInput, mask: d.mask}
	if d.ship != nil {
		stop, stopShip := context.WithCancel(context.Background())
		shipped := make(chan struct{})
		go func() {
			defer close(shipped)
			d.ship.run(stop)
		}()
		defer func() {
			stopShip()
			<-shipped
		}()
	}
	if out == nil {
		out = io.Discard
	}
	revs := d.newRevisionKeeper(out)
	failing := false
	flush := func() error {
		if len(w.buf) == 0 {
			return nil
		}
		_, err := out.Write(w.buf)
		revs.flushed()
		w.buf = w.buf[:0]
		if cap(w.buf) > maxKeptBatch {
			w.buf = nil
		}
		switch {
		case err != nil && !failing:
			d.log.Error("authz: cannot write the decision log; decisions are lost until it works again", "err", err)
			failing = true
		case err == nil && failing:
			d.log.Info("authz: decision log writes again")
			failing = false
		}
		return err
	}
	write := func(r *Record) {
		revs.logging(r.Policy)
		w.reason = ""
		if r.Reason != nil {
			w.reason = d.reason(r)
		}
		w.line(r)
		if d.ship != nil {
			d.ship.add(w, r)
		}
		if len(w.buf) >= batchBytes || len(d.queue) == 0 {
			flush()
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
					return flush()
				}
			}
		}
	}
}

// busyShare is how full the queue may be for a Reason still to be
// worked out: past it, explaining would cost lines dropped.
const busyShare = 2

// reason is r.Reason(), unless the queue is filling up.
func (d *Log) reason(r *Record) string {
	if len(d.queue) > cap(d.queue)/busyShare {
		return "not explained: the decision log is busy"
	}
	return r.Reason()
}
