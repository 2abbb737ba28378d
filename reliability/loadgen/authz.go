package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshid/meshid/test/authztest"
)

// authz sends -checks ext_authz checks from -c callers sharing -conns
// HTTP/2 connections, each caller one check at a time, as Envoy's ext_authz
// filter does: the demo frontend's GET /hello, each with its own request id
// and time. A check fails when the call fails or is not allowed. -warmup
// checks go first and are not counted.
func authz(ctx context.Context, args []string, _ io.Writer) (Result, error) {
	var (
		addr                     string
		checks, c, conns, warmup int
		timeout                  time.Duration
	)
	flags("authz", args, func(fs *flag.FlagSet) {
		fs.StringVar(&addr, "addr", "127.0.0.1:9191", "ext_authz gRPC server")
		fs.IntVar(&checks, "checks", 10000, "checks to measure")
		fs.IntVar(&c, "c", 32, "concurrent callers")
		fs.IntVar(&conns, "conns", 2, "HTTP/2 connections the callers share")
		fs.IntVar(&warmup, "warmup", 1000, "checks sent first, not counted")
		fs.DurationVar(&timeout, "timeout", 10*time.Second, "deadline of each check")
	})
	if c < 1 || conns < 1 {
		return Result{}, fmt.Errorf("-c %d and -conns %d must be at least 1", c, conns)
	}
	clients := make([]authv3.AuthorizationClient, conns)
	for i := range clients {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return Result{}, err
		}
		defer cc.Close()
		clients[i] = authv3.NewAuthorizationClient(cc)
	}
	if warmup > 0 {
		if t, _ := check(ctx, clients, warmup, c, timeout); t.errs == warmup {
			return Result{}, fmt.Errorf("every warm-up check failed: %w", t.first)
		}
	}
	t, wall := check(ctx, clients, checks, c, timeout)
	return t.result(wall), nil
}

func check(ctx context.Context, clients []authv3.AuthorizationClient, total, c int, timeout time.Duration) (*tally, time.Duration) {
	var (
		next atomic.Int64
		mu   sync.Mutex
		all  tally
		wg   sync.WaitGroup
	)
	start := time.Now()
	for i := range c {
		client := clients[i%len(clients)]
		req := authztest.DemoCheck("/hello")
		httpReq := req.Attributes.Request.Http
		wg.Go(func() {
			var mine tally
			for n := next.Add(1); n <= int64(total); n = next.Add(1) {
				httpReq.Id = strconv.FormatInt(n, 10)
				httpReq.Headers["x-request-id"] = fmt.Sprintf("%08x-0000-4000-8000-%012x", i, n)
				req.Attributes.Request.Time = timestamppb.Now()
				callCtx, cancel := context.WithTimeout(ctx, timeout)
				began := time.Now()
				resp, err := client.Check(callCtx, proto.Clone(req).(*authv3.CheckRequest))
				took := time.Since(began)
				cancel()
				if err == nil && codes.Code(resp.GetStatus().GetCode()) != codes.OK {
					err = errors.New("denied: " + resp.GetStatus().String())
				}
				mine.add(took, err)
			}
			mu.Lock()
			all.merge(&mine)
			mu.Unlock()
		})
	}
	wg.Wait()
	return &all, time.Since(start)
}
