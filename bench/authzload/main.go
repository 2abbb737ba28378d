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
// With -server given more than once it drives several servers in turns
// instead: each of -rounds rounds gives every server a turn of -warmup
// (not counted) and -d/-rounds (counted), the first server of a round
// moving by one every round, and one line is printed per server. On a
// machine whose other load comes and goes, servers measured one after
// the other would each meet a different share of the CPU; in turns they
// meet about the same.
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
	"strings"
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
	addr := flag.String("addr", "127.0.0.1:9191", "ext_authz server (without -server)")
	var servers []server
	flag.Func("server", "`name=addr[,expect]`: a server to drive, in turns with the others given; expect as -expect for it alone", func(v string) error {
		srv, err := parseServer(v)
		servers = append(servers, srv)
		return err
	})
	concurrency := flag.Int("c", 8, "concurrent callers, each one call at a time")
	duration := flag.Duration("d", 5*time.Second, "how long to send (to each server)")
	rounds := flag.Int("rounds", 1, "turns each server gets, each of -d/-rounds (with -server)")
	warmup := flag.Duration("warmup", time.Second, "calls sent before measuring, not counted (to each server, in every round)")
	conns := flag.Int("conns", 2, "HTTP/2 connections the callers share (Envoy opens one per worker thread)")
	mix := flag.Bool("mix", false, "send a mesh's mix of callers and paths instead of one request")
	expect := flag.Bool("expect", false, "with -mix, require the demo policy's decision for each request instead of an allow")
	flag.Parse()
	if len(servers) == 0 {
		servers = []server{{addr: *addr, expect: *expect}}
	}
	reqs := []mixRequest{{req: authztest.DemoCheck("/hello?lang=fr"), allowed: true, weight: 1}}
	if *mix {
		reqs = meshMix()
	}
	if err := run(servers, *concurrency, *conns, *rounds, *warmup, *duration, reqs); err != nil {
		fmt.Fprintln(os.Stderr, "authzload:", err)
		os.Exit(1)
	}
}

// server is one server to drive and how its answers are checked.
type server struct {
	name, addr string
	expect     bool
	clients    []authv3.AuthorizationClient
	lat        []time.Duration
	errs       int
}

func parseServer(v string) (server, error) {
	name, rest, ok := strings.Cut(v, "=")
	addr, opt, _ := strings.Cut(rest, ",")
	if !ok || name == "" || addr == "" || (opt != "" && opt != "expect") {
		return server{}, fmt.Errorf("-server %q: want name=addr or name=addr,expect", v)
	}
	return server{name: name, addr: addr, expect: opt == "expect"}, nil
}

func run(servers []server, concurrency, nconns, rounds int, warmup, duration time.Duration, reqs []mixRequest) error {
	if concurrency < 1 || nconns < 1 || rounds < 1 {
		return fmt.Errorf("-c %d, -conns %d and -rounds %d must be at least 1", concurrency, nconns, rounds)
	}
	for i := range servers {
		srv := &servers[i]
		for range nconns {
			conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return err
			}
			defer conn.Close()
			srv.clients = append(srv.clients, authv3.NewAuthorizationClient(conn))
		}
	}
	turn := duration / time.Duration(rounds)
	for round := range rounds {
		for k := range servers {
			srv := &servers[(round+k)%len(servers)]
			// Every turn is warmed up: a server idle while the others
			// had theirs has let its caches and collector settle to idle.
			if warmup > 0 {
				if _, _, err := drive(srv.clients, reqs, srv.expect, concurrency, warmup, 2*round+1); err != nil {
					return fmt.Errorf("%s: warm-up: %w", srv.addr, err)
				}
			}
			lat, errs, err := drive(srv.clients, reqs, srv.expect, concurrency, turn, 2*round+2)
			if err != nil {
				return fmt.Errorf("%s: %w", srv.addr, err)
			}
			srv.lat = append(srv.lat, lat...)
			srv.errs += errs
		}
	}
	for _, srv := range servers {
		lat := srv.lat
		slices.Sort(lat)
		pct := func(p float64) time.Duration {
			if len(lat) == 0 {
				return 0
			}
			return lat[min(len(lat)-1, int(p*float64(len(lat))))]
		}
		prefix := ""
		if srv.name != "" {
			prefix = "server=" + srv.name + " "
		}
		fmt.Printf("%sc=%d requests=%d errors=%d rps=%.0f p50_us=%.1f p99_us=%.1f\n",
			prefix, concurrency, len(lat), srv.errs, float64(len(lat))/(turn*time.Duration(rounds)).Seconds(),
			float64(pct(0.50))/1e3, float64(pct(0.99))/1e3)
	}
	return nil
}

// drive calls Check from concurrency goroutines until d has passed and
// returns the latency of every successful call and the number of errors.
// The first error is returned too when every call failed. Each goroutine
// walks the mix in its own order, each request as often as its weight;
// turn keeps the request ids of one turn from another's.
func drive(clients []authv3.AuthorizationClient, reqs []mixRequest, expect bool, concurrency int, d time.Duration, turn int) ([]time.Duration, int, error) {
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
				httpReq.Id = strconv.Itoa(i<<40 | turn<<32 | seq)
				httpReq.Headers["x-request-id"] = fmt.Sprintf("%08x-%04x-4000-8000-%012x", i, turn, seq)
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
