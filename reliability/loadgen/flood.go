package main

import (
	"context"
	"flag"
	"io"
	"net"
	"sync"
	"time"
)

// flood is a hostile client: it opens -conns connections to the socket
// that never send a byte, holds them for -for, and every -reopen dials
// again in place of those meshid closed or refused, at most -rate dials a
// second (0: as fast as it can). It reports the most it held at once
// (Peak, as the client sees it: a connection the kernel queued for meshid
// counts), how many meshid closed or refused (Closed) and the dials that
// failed outright (Errors).
func flood(ctx context.Context, args []string, _ io.Writer) (Result, error) {
	var (
		socket       string
		conns, rate  int
		hold, reopen time.Duration
	)
	flags("flood", args, func(fs *flag.FlagSet) {
		fs.StringVar(&socket, "socket", "", "meshid's socket")
		fs.IntVar(&conns, "conns", 2000, "connections to hold")
		fs.DurationVar(&hold, "for", 10*time.Second, "how long to flood")
		fs.DurationVar(&reopen, "reopen", 100*time.Millisecond, "how often to replace closed connections")
		fs.IntVar(&rate, "rate", 0, "most dials a second; 0: no limit")
	})
	ctx, cancel := context.WithTimeout(ctx, hold)
	defer cancel()

	var (
		mu      sync.Mutex
		open    = map[net.Conn]bool{}
		res     Result
		readers sync.WaitGroup
	)
	dial := func() {
		c, err := net.DialTimeout("unix", socket, time.Second)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			res.Errors++
			if res.FirstError == "" {
				res.FirstError = err.Error()
			}
			return
		}
		open[c] = true
		res.Peak = max(res.Peak, len(open))
		// meshid speaks first (its HTTP/2 settings); the read ends when it
		// closes the connection, or we do.
		readers.Go(func() {
			_, _ = io.Copy(io.Discard, c)
			c.Close()
			mu.Lock()
			defer mu.Unlock()
			if open[c] {
				delete(open, c)
				if ctx.Err() == nil {
					res.Closed++
				}
			}
		})
	}
	start := time.Now()
	tick := time.NewTicker(reopen)
	defer tick.Stop()
	for ctx.Err() == nil {
		mu.Lock()
		missing := conns - len(open)
		mu.Unlock()
		if perTick := int(float64(rate) * reopen.Seconds()); rate > 0 {
			missing = min(missing, max(perTick, 1))
		}
		for range missing {
			if ctx.Err() != nil {
				break
			}
			dial()
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	mu.Lock()
	for c := range open {
		c.Close()
	}
	mu.Unlock()
	readers.Wait()
	res.WallNS = time.Since(start).Nanoseconds()
	return res, nil
}
