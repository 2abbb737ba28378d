package decisionlog

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/plugins/rest"

	"github.com/meshid/meshid/internal/logpace"
)

// Collector takes uploads of decision log events: each a gzipped JSON
// array of events in OPA's format.
type Collector interface {
	// Upload sends body and returns the HTTP status of the answer, or an
	// error when none came.
	Upload(ctx context.Context, body []byte) (status int, err error)
}

// RESTCollector uploads to resource (a path below the service's URL)
// with c, as OPA's decision log plugin does: a POST of gzipped JSON.
func RESTCollector(c rest.Client, resource string) Collector {
	return restCollector{c: c.WithHeader("Content-Type", "application/json").WithHeader("Content-Encoding", "gzip"), resource: resource}
}

type restCollector struct {
	c        rest.Client
	resource string
}

func (r restCollector) Upload(ctx context.Context, body []byte) (int, error) {
	resp, err := r.c.WithBytes(body).Do(ctx, http.MethodPost, r.resource)
	if err != nil {
		return 0, err
	}
	// Read a little of the answer so that the connection is reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if m := resp.Request.Method; m != http.MethodPost {
		// A 301, 302 or 303 turns the POST into a body-less GET: its 2xx
		// says nothing of the events.
		return 0, fmt.Errorf("the collector redirected the upload to %s %s, which carries no events: give its final URL", m, resp.Request.URL.Redacted())
	}
	return resp.StatusCode, nil
}

// ShipperOptions configure a Shipper. Zero values take the defaults
// below.
type ShipperOptions struct {
	Collector Collector
	// Labels are every event's labels: OPA's id and version, and the
	// operator's.
	Labels map[string]string
	// Everything buffered is uploaded every MinDelay to MaxDelay (a
	// random time in between), and a full batch at once; a failed upload
	// is retried after a backoff from MinDelay doubling up to MaxDelay.
	MinDelay, MaxDelay time.Duration
	// UploadSizeLimit caps one upload's gzipped body.
	UploadSizeLimit int
	// BufferSizeLimit bounds the JSON of the events waiting; past it the
	// oldest are dropped.
	BufferSizeLimit int64
	// UploadTimeout bounds one upload, from sending it to reading the
	// answer.
	UploadTimeout time.Duration
	// FlushTimeout bounds the uploads at shutdown.
	FlushTimeout time.Duration
	Log          *slog.Logger
}

// Defaults of ShipperOptions, as docs/authz.md § Shipping to a collector
// gives them.
const (
	DefaultShipMinDelay     = time.Second
	DefaultShipMaxDelay     = 10 * time.Second
	DefaultUploadSizeLimit  = 32 << 10
	DefaultBufferSizeLimit  = 1 << 20
	DefaultShipFlushTimeout = 5 * time.Second
	DefaultUploadTimeout    = 10 * time.Second
)

// Shipper ships the events of a Log (Options.Shipper) to a Collector: it
// buffers them, batches them into gzipped uploads of at most
// UploadSizeLimit, and retries a failed upload, in order, with backoff,
// until it goes through or its events fall out of the bounded buffer,
// oldest first. An event leaves the buffer only once the collector
// answered 2xx to an upload holding it: delivery is at least once.
//
// The Log's goroutine adds events and never waits for an upload; the
// Shipper's own goroutine, which the Log's Run starts and ends, uploads.
type Shipper struct {
	o      ShipperOptions
	events eventWriter
	pace   *logpace.Pacer[struct{}]
	wake   chan struct{} // a full batch is buffered

	mu       sync.Mutex
	buf      []shipped // buf[head:] are buffered, oldest first
	head     int
	bytes    int64
	next     uint64 // seq of the next event added
	inFlight struct {
		from, to uint64 // seqs of the upload under way, [from, to)
		dropped  int    // of them, dropped from the buffer meanwhile
	}
	// ratio is the JSON bytes per gzipped byte of the last batch, which
	// sizes the next one.
	ratio float64

	gz    *gzip.Writer
	stats shipperStats
}

type shipped struct {
	seq  uint64
	data []byte
}

// ShipperStats are a Shipper's counters, as the metrics name them.
type ShipperStats struct {
	Shipped uint64
	// Dropped, by reason: buffer_full, too_large, shutdown.
	DroppedBufferFull, DroppedTooLarge, DroppedShutdown uint64
	// Failures, by class of the answer: 4xx, 5xx, other (any other
	// status), error (no answer).
	Failures4xx, Failures5xx, FailuresOther, FailuresError uint64
	UploadedBytes                                          uint64
	LastSuccess                                            time.Time // zero before the first
	LastError                                              string    // of the last failed upload; empty after a success
	BufferedBytes                                          int64
	BufferedEvents                                         int
}

type shipperStats struct {
	shipped, droppedFull, droppedLarge, droppedShutdown atomic.Uint64
	f4xx, f5xx, fOther, fError                          atomic.Uint64
	uploadedBytes                                       atomic.Uint64
	lastSuccess                                         atomic.Int64 // unix nanos
	lastError                                           atomic.Pointer[string]
}

// NewShipper returns a shipper to give a Log in Options.Shipper.
func NewShipper(o ShipperOptions) *Shipper {
	if o.MinDelay <= 0 {
		o.MinDelay = DefaultShipMinDelay
	}
	if o.MaxDelay < o.MinDelay {
		o.MaxDelay = max(o.MinDelay, DefaultShipMaxDelay)
	}
	if o.UploadSizeLimit <= 0 {
		o.UploadSizeLimit = DefaultUploadSizeLimit
	}
	if o.BufferSizeLimit <= 0 {
		o.BufferSizeLimit = DefaultBufferSizeLimit
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = DefaultShipFlushTimeout
	}
	if o.UploadTimeout <= 0 {
		o.UploadTimeout = DefaultUploadTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Shipper{o: o, pace: logpace.New[struct{}](time.Minute, 1, nil), wake: make(chan struct{}, 1), ratio: initialRatio}
	s.events.labels = encodeLabels(o.Labels)
	s.gz, _ = gzip.NewWriterLevel(io.Discard, gzip.DefaultCompression)
	return s
}

// initialRatio is the first guess of how much decision log JSON gzips
// into a byte: inputs repeat their keys and most of their values.
const initialRatio = 8

// Stats returns the shipper's counters now.
func (s *Shipper) Stats() ShipperStats {
	st := ShipperStats{
		Shipped:           s.stats.shipped.Load(),
		DroppedBufferFull: s.stats.droppedFull.Load(),
		DroppedTooLarge:   s.stats.droppedLarge.Load(),
		DroppedShutdown:   s.stats.droppedShutdown.Load(),
		Failures4xx:       s.stats.f4xx.Load(),
		Failures5xx:       s.stats.f5xx.Load(),
		FailuresOther:     s.stats.fOther.Load(),
		FailuresError:     s.stats.fError.Load(),
		UploadedBytes:     s.stats.uploadedBytes.Load(),
	}
	if ns := s.stats.lastSuccess.Load(); ns != 0 {
		st.LastSuccess = time.Unix(0, ns)
	}
	if e := s.stats.lastError.Load(); e != nil {
		st.LastError = *e
	}
	s.mu.Lock()
	st.BufferedBytes, st.BufferedEvents = s.bytes, len(s.buf)-s.head
	s.mu.Unlock()
	return st
}

// add buffers the event the lineWriter's line of r makes; it runs on the
// Log's goroutine and never waits for an upload.
func (s *Shipper) add(w *lineWriter, r *Record) {
	s.events.event(w, r)
	n := int64(len(s.events.buf))
	if n > s.o.BufferSizeLimit {
		s.stats.droppedLarge.Add(1)
		return
	}
	data := bytes.Clone(s.events.buf)
	if cap(s.events.buf) > maxKeptBatch {
		s.events.buf = nil
	}
	s.mu.Lock()
	for s.bytes+n > s.o.BufferSizeLimit {
		s.dropOldest()
	}
	s.buf = append(s.buf, shipped{seq: s.next, data: data})
	s.next++
	s.bytes += n
	full := s.full()
	s.mu.Unlock()
	if full {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// dropOldest drops the oldest buffered event, counted as dropped now or,
// when an upload holding it is under way, once that upload failed.
func (s *Shipper) dropOldest() {
	e := s.popOldest()
	if e.seq >= s.inFlight.from && e.seq < s.inFlight.to {
		s.inFlight.dropped++
	} else {
		s.stats.droppedFull.Add(1)
	}
}

// popOldest takes the oldest buffered event out of the buffer, whose
// slots before head are given back now and then: under steady traffic
// the buffer is never empty, and the slots of every event ever shipped
// would otherwise stay. The caller holds mu.
func (s *Shipper) popOldest() shipped {
	e := s.buf[s.head]
	s.buf[s.head] = shipped{}
	s.head++
	s.bytes -= int64(len(e.data))
	switch {
	case s.head == len(s.buf):
		s.buf, s.head = s.buf[:0], 0
	case s.head > 1024 && s.head*2 > len(s.buf):
		n := copy(s.buf, s.buf[s.head:])
		clear(s.buf[n:])
		s.buf, s.head = s.buf[:n], 0
	}
	return e
}

// full says whether an upload should go now, without waiting for the
// next interval: a batch is buffered, or the buffer is half full (with
// events that gzip well, a batch may be more than the buffer holds).
// The caller holds mu.
func (s *Shipper) full() bool {
	return float64(s.bytes) >= min(s.batchBytes(), float64(s.o.BufferSizeLimit)/2)
}

// batchBytes is how much event JSON is expected to fill an upload.
func (s *Shipper) batchBytes() float64 {
	return float64(s.o.UploadSizeLimit) * s.ratio * batchFill
}

// batchFill leaves room for a batch that gzips worse than the last.
const batchFill = 0.9

// run uploads until stop ends, then flushes for FlushTimeout at most.
func (s *Shipper) run(stop context.Context) {
	// Uploads under way when stop ends have until the flush's end, not
	// more.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var bound sync.WaitGroup
	bound.Go(func() {
		select {
		case <-stop.Done():
		case <-done:
			return
		}
		t := time.NewTimer(s.o.FlushTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-done:
		}
	})
	defer bound.Wait()
	defer close(done)
	defer cancel()
	timer := time.NewTimer(s.interval())
	defer timer.Stop()
	failures := 0
	for {
		// Events older than until go now; a full batch always does. At
		// each tick that is what was buffered then, and no more: events
		// that come while it is uploaded wait for a full batch or the
		// next tick, rather than going a few at a time, back to back.
		var until uint64
		select {
		case <-stop.Done():
			s.flush(ctx)
			return
		case <-s.wake:
		case <-timer.C:
			until = s.seq()
		}
		for {
			sent, more, err := s.upload(ctx, until)
			if err == nil {
				if sent && failures > 0 {
					s.o.Log.Info("authz: the decision log collector takes uploads again", "failed_uploads", failures)
					failures = 0
				}
				if !more {
					break
				}
				continue
			}
			failures++
			until = s.seq() // the retry sends what is buffered, full or not
			s.failed(err, failures)
			select {
			case <-stop.Done():
				s.flush(ctx)
				return
			case <-time.After(s.backoff(failures)):
			}
		}
		timer.Reset(s.interval())
	}
}

// interval is the wait before the next periodic upload.
func (s *Shipper) interval() time.Duration {
	return s.o.MinDelay + rand.N(s.o.MaxDelay-s.o.MinDelay+1)
}

// backoff is the wait before the retry after the n-th failure in a row:
// MinDelay doubling, capped at MaxDelay, a random time between half of
// it and all of it.
func (s *Shipper) backoff(n int) time.Duration {
	d := s.o.MinDelay
	for i := 1; i < n && d < s.o.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, s.o.MaxDelay)
	return d/2 + rand.N(d/2+1)
}

// seq is the seq the next event added gets: every event buffered now
// is older.
func (s *Shipper) seq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next
}

// flush uploads what is buffered, one attempt per batch, until the
// buffer is empty, an upload fails or ctx ends; the rest is counted as
// dropped.
func (s *Shipper) flush(ctx context.Context) {
	for {
		_, more, err := s.upload(ctx, math.MaxUint64)
		if err == nil && !more {
			return
		}
		if err != nil {
			s.mu.Lock()
			n := len(s.buf) - s.head
			s.buf, s.head, s.bytes = nil, 0, 0
			s.mu.Unlock()
			s.stats.droppedShutdown.Add(uint64(n))
			s.o.Log.Warn("authz: decision log events not shipped at shutdown: the collector did not take them in time", "events", n, "err", err)
			return
		}
	}
}

// uploadError is an upload the collector did not take.
type uploadError struct {
	status int // 0: no answer
	err    error
}

func (e *uploadError) Error() string {
	if e.status == 0 {
		return e.err.Error()
	}
	return "the collector answered " + strconv.Itoa(e.status) + " " + http.StatusText(e.status)
}

// due says whether an upload should go now: the oldest event buffered
// is older than until, or a batch is full. The caller holds mu.
func (s *Shipper) due(until uint64) bool {
	return s.head < len(s.buf) && (s.buf[s.head].seq < until || s.full())
}

// upload sends the oldest buffered events, as many as one upload takes,
// if they are due (see due). sent says the collector took an upload;
// more that more is due now.
func (s *Shipper) upload(ctx context.Context, until uint64) (sent, more bool, err error) {
	s.mu.Lock()
	if !s.due(until) {
		s.mu.Unlock()
		return false, false, nil
	}
	batch := s.take()
	// In flight from the moment it is taken: events the buffer drops
	// while the batch is encoded are the batch's to count, or they would
	// be counted dropped and then shipped as well.
	s.inFlight.from, s.inFlight.to, s.inFlight.dropped = batch[0].seq, batch[len(batch)-1].seq+1, 0
	s.mu.Unlock()
	body, n := s.encode(batch)
	if n == 0 {
		// One event that alone gzips past the limit: never shippable.
		// No upload, neither a success nor a failure.
		s.mu.Lock()
		lost := s.inFlight.dropped
		s.inFlight.from, s.inFlight.to, s.inFlight.dropped = 0, 0, 0
		if lost == 0 && s.head < len(s.buf) && s.buf[s.head].seq == batch[0].seq {
			s.popOldest()
			s.stats.droppedLarge.Add(1)
		}
		more = s.due(until)
		s.mu.Unlock()
		// Dropped from the buffer meanwhile (the too large one first:
		// drops go oldest first): counted as the buffer's drops.
		s.stats.droppedFull.Add(uint64(lost))
		return false, more, nil
	}
	batch = batch[:n]
	s.mu.Lock()
	// The upload holds the first n only. Drops go oldest first, so those
	// dropped meanwhile are a prefix of the batch: any past its n-th
	// were not in the upload and count as dropped now.
	to := batch[n-1].seq + 1
	if over := int(s.inFlight.from+uint64(s.inFlight.dropped)) - int(to); over > 0 {
		s.stats.droppedFull.Add(uint64(over))
		s.inFlight.dropped -= over
	}
	s.inFlight.to = to
	s.mu.Unlock()

	uctx, cancel := context.WithTimeout(ctx, s.o.UploadTimeout)
	status, uerr := s.o.Collector.Upload(uctx, body)
	cancel()
	if uerr == nil && (status < 200 || status > 299) {
		uerr = fmt.Errorf("status %d", status)
	} else if uerr != nil {
		status = 0
	}

	s.mu.Lock()
	lost := s.inFlight.dropped
	s.inFlight.from, s.inFlight.to, s.inFlight.dropped = 0, 0, 0
	if uerr == nil {
		for s.head < len(s.buf) && s.buf[s.head].seq < to {
			s.popOldest()
		}
	}
	more = s.due(until)
	s.mu.Unlock()

	if uerr != nil {
		s.stats.droppedFull.Add(uint64(lost))
		s.count(status)
		e := &uploadError{status: status, err: uerr}
		msg := e.Error()
		s.stats.lastError.Store(&msg)
		return false, false, e
	}
	s.stats.shipped.Add(uint64(n))
	s.stats.uploadedBytes.Add(uint64(len(body)))
	s.stats.lastSuccess.Store(time.Now().UnixNano())
	s.stats.lastError.Store(nil)
	return true, more, nil
}

// take returns the oldest buffered events, about as many as one upload
// takes, and at least one if any; the caller holds mu.
func (s *Shipper) take() []shipped {
	limit := s.batchBytes()
	var total float64
	end := s.head
	for end < len(s.buf) && (end == s.head || total+float64(len(s.buf[end].data)) <= limit) {
		total += float64(len(s.buf[end].data)) + 1
		end++
	}
	return append([]shipped(nil), s.buf[s.head:end]...)
}

// encode gzips the JSON array of the first events of batch, as many as
// fit UploadSizeLimit, and returns the body and how many; 0 when not
// even the first fits. The body is the upload's own: an HTTP transport
// may still read a request's body after the answer came (a collector
// that answers before it has read it all), so no later upload writes
// into it.
func (s *Shipper) encode(batch []shipped) (body []byte, n int) {
	var buf bytes.Buffer
	n = len(batch)
	for n > 0 {
		buf.Reset()
		s.gz.Reset(&buf)
		raw := 0
		s.gz.Write([]byte{'['})
		for i, e := range batch[:n] {
			if i > 0 {
				s.gz.Write([]byte{','})
			}
			s.gz.Write(e.data)
			raw += len(e.data) + 1
		}
		s.gz.Write([]byte{']'})
		s.gz.Close()
		size := buf.Len()
		if size <= s.o.UploadSizeLimit {
			s.mu.Lock()
			s.ratio = max(1, float64(raw)/float64(size))
			s.mu.Unlock()
			return buf.Bytes(), n
		}
		if n == 1 {
			return nil, 0
		}
		// Fewer, by how far over it was, and some more.
		n = max(1, min(n-1, int(float64(n)*float64(s.o.UploadSizeLimit)/float64(size)*batchFill)))
	}
	return nil, 0
}

func (s *Shipper) count(status int) {
	switch {
	case status == 0:
		s.stats.fError.Add(1)
	case status >= 400 && status < 500:
		s.stats.f4xx.Add(1)
	case status >= 500 && status < 600:
		s.stats.f5xx.Add(1)
	default:
		s.stats.fOther.Add(1)
	}
}

// failed logs a failed upload: the first of a run of failures, then at
// most one a minute.
func (s *Shipper) failed(err error, failures int) {
	if ok, held := s.pace.Allow(struct{}{}); ok || failures == 1 {
		st := s.Stats()
		s.o.Log.Error("authz: the decision log collector did not take an upload; its events stay buffered and are retried", "err", err,
			"failed_uploads", failures, "lines_held_back", held, "buffered_events", st.BufferedEvents, "dropped_buffer_full", st.DroppedBufferFull)
	}
}
