// Command authzload drives an ext_authz gRPC server the way Envoy's
// ext_authz filter does: CheckRequests as Envoy 1.40 describes them from a
// fixed number of concurrent callers over a few HTTP/2 connections, for a
// fixed time; each call has its own request id and time, as Envoy's do.
// By default every call is the demo frontend's GET /hello to the backend;
// -mix sends a mesh's mix instead (mix.go): a few callers, each from pods
// of its own, calling a few paths, most often the same ones.
// It prints one line: concurrency, requests, errors, throughput and the
// latency percentiles, for bench/authz.sh to tabulate.
//
// A call is an error when it fails, or when the server does not answer it
// as expected: allowed, or with -expect the demo policy's decision (a
// no-op server allows everything, so it is run without).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshid/meshid/test/authztest"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:9191", "ext_authz server")
	concurrency := flag.Int("c", 8, "concurrent callers, each one call at a time")
	duration := flag.Duration("d", 5*time.Second, "how long to send")
	warmup := flag.Duration("warmup", time.Second, "calls sent before measuring, not counted")
	conns := flag.Int("conns", 2, "HTTP/2 connections the callers share (Envoy opens one per worker thread)")
	mix := flag.Bool("mix", false, "send a mesh's mix of callers and paths instead of one request")
	expect := flag.Bool("expect", false, "with -mix, require the demo policy's decision for each request instead of an allow")
	flag.Parse()
	reqs := []mixRequest{{req: authztest.DemoCheck("/hello?lang=fr"), allowed: true, weight: 1}}
	if *mix {
		reqs = meshMix()
	}
	if err := run(*addr, *concurrency, *conns, *warmup, *duration, reqs, *expect); err != nil {
		fmt.Fprintln(os.Stderr, "authzload:", err)
		os.Exit(1)
	}
}

func run(addr string, concurrency, nconns int, warmup, duration time.Duration, reqs []mixRequest, expect bool) error {
	if concurrency < 1 || nconns < 1 {
		return fmt.Errorf("-c %d and -conns %d must be at least 1", concurrency, nconns)
	}
	clients := make([]authv3.AuthorizationClient, nconns)
	for i := range clients {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		clients[i] = authv3.NewAuthorizationClient(conn)
	}
	if warmup > 0 {
		if _, _, err := drive(clients, reqs, expect, concurrency, warmup); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	lat, errs, err := drive(clients, reqs, expect, concurrency, duration)
	if err != nil {
		return err
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))]
	}
	fmt.Printf("c=%d requests=%d errors=%d rps=%.0f p50_us=%.1f p99_us=%.1f\n",
		concurrency, len(lat), errs, float64(len(lat))/duration.Seconds(),
		float64(pct(0.50))/1e3, float64(pct(0.99))/1e3)
	return nil
}

// drive calls Check from concurrency goroutines until d has passed and
// returns the latency of every successful call and the number of errors.
// The first error is returned too when every call failed. Each goroutine
// walks the mix in its own order, each request as often as its weight.
func drive(clients []authv3.AuthorizationClient, reqs []mixRequest, expect bool, concurrency int, d time.Duration) ([]time.Duration, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var (
		mu       sync.Mutex
		all      []time.Duration
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	for i := range concurrency {
		client := clients[i%len(clients)]
		// Each caller has its own requests: like Envoy's, every call
		// carries a new request id and time.
		order := schedule(reqs, uint64(i))
		mine := make([]mixRequest, len(reqs))
		for j, r := range reqs {
			mine[j] = mixRequest{req: proto.Clone(r.req).(*authv3.CheckRequest), allowed: r.allowed}
		}
		wg.Go(func() {
			lat := make([]time.Duration, 0, 1<<16)
			n := 0
			var first error
			for seq := 0; ctx.Err() == nil; seq++ {
				m := mine[order[seq%len(order)]]
				httpReq := m.req.Attributes.Request.Http
				httpReq.Id = strconv.Itoa(i<<32 | seq)
				httpReq.Headers["x-request-id"] = fmt.Sprintf("%08x-0000-4000-8000-%012x", i, seq)
				m.req.Attributes.Request.Time = timestamppb.Now()
				want := codes.OK
				if expect && !m.allowed {
					want = codes.PermissionDenied
				}
				start := time.Now()
				resp, err := client.Check(context.Background(), m.req)
				took := time.Since(start)
				switch {
				case err != nil:
					n++
					first = cmpErr(first, err)
				case codes.Code(resp.GetStatus().GetCode()) != want:
					n++
					first = cmpErr(first, fmt.Errorf("%s %s from %s: got %v, want %v", httpReq.Method, httpReq.Path, m.req.Attributes.Source.Principal, resp.GetStatus(), want))
				default:
					lat = append(lat, took)
				}
			}
			mu.Lock()
			all = append(all, lat...)
			errs += n
			firstErr = cmpErr(firstErr, first)
			mu.Unlock()
		})
	}
	wg.Wait()
	if firstErr != nil {
		fmt.Fprintln(os.Stderr, "authzload: first error:", firstErr)
	}
	if len(all) == 0 && firstErr != nil {
		return nil, errs, firstErr
	}
	return all, errs, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
