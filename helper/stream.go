package helper

import (
	"context"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// stream is the helper's FetchX509SVID stream: go-spiffe's watch runs on
// its own goroutine and calls back there; stream hands what it reports to
// the helper's loop as channels, so that updates are handled one at a
// time, apart from the watch's lifecycle.
type stream struct {
	updates chan *workloadapi.X509Context // the newest update not yet read
	errs    chan error                    // the newest failure not yet read
	ended   chan error                    // the watch gave up on its own
	cancel  func()
	done    chan struct{}
}

func watch(ctx context.Context, src Source) *stream {
	ctx, cancel := context.WithCancel(ctx)
	s := &stream{
		updates: make(chan *workloadapi.X509Context, 1),
		errs:    make(chan error, 1),
		ended:   make(chan error, 1),
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		err := src.WatchX509Context(ctx, s)
		if ctx.Err() == nil {
			// go-spiffe retries all but InvalidArgument: meshid refused the
			// request itself, and no retry will change that.
			s.ended <- err
		}
	}()
	return s
}

// stop ends the watch and waits for its goroutine.
func (s *stream) stop() {
	s.cancel()
	<-s.done
}

func (s *stream) OnX509ContextUpdate(c *workloadapi.X509Context) { latest(s.updates, c) }

// OnX509ContextWatchError reports each failure of a retrying watch; while
// the loop is busy, only the latest is kept.
func (s *stream) OnX509ContextWatchError(err error) { latest(s.errs, err) }

// latest puts v in ch, a channel of one, replacing an unread older value.
func latest[T any](ch chan T, v T) {
	for {
		select {
		case ch <- v:
			return
		default:
			select {
			case <-ch:
			default:
			}
		}
	}
}

// Backoff is how the helper's Workload API client should retry a lost
// stream: after 250ms, doubling to 2s, so that the files are current soon
// after meshid restarts (go-spiffe's default waits up to 30s). Pass it
// with workloadapi.WithBackoffStrategy.
type Backoff struct{}

func (Backoff) NewBackoff() workloadapi.Backoff { return &doubling{} }

type doubling struct{ n int }

func (b *doubling) Next() time.Duration {
	d := 250 * time.Millisecond << min(b.n, 3)
	b.n++
	return d
}

func (b *doubling) Reset() { b.n = 0 }
