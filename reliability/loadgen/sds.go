package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// sds opens -streams StreamSecrets streams, each on its own connection as
// that many Envoys would, -parallel at a time, and records for each the
// time from dialling to the first response, which must carry one secret
// per name asked for. Once every stream has its first response (or
// failed) it prints "open {Result}" and keeps them all open; with
// -push-timeout it then waits that long for one more response on every
// stream (the suite causes it), ACKing each as Envoy does, before closing
// them all.
func sds(ctx context.Context, args []string, out io.Writer) (Result, error) {
	var (
		socket, names      string
		streams, parallel  int
		first, pushTimeout time.Duration
	)
	flags("sds", args, func(fs *flag.FlagSet) {
		fs.StringVar(&socket, "socket", "", "meshid's socket")
		fs.StringVar(&names, "names", "", "resource names, comma-separated")
		fs.IntVar(&streams, "streams", 1000, "streams to hold open at once")
		fs.IntVar(&parallel, "parallel", 64, "streams being opened at a time")
		fs.DurationVar(&first, "first-timeout", 30*time.Second, "wait at most this long for a stream's first response")
		fs.DurationVar(&pushTimeout, "push-timeout", 0, "after all are open, wait this long for one more response on each; 0: do not wait")
	})
	var resources []string
	if names != "" {
		resources = strings.Split(names, ",")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	open := make([]*stream, streams)
	var (
		mu    sync.Mutex
		opens tally
		g     errgroup.Group
	)
	g.SetLimit(parallel)
	start := time.Now()
	for i := range open {
		g.Go(func() error {
			began := time.Now()
			s, err := openStream(ctx, socket, resources, first)
			mu.Lock()
			defer mu.Unlock()
			opens.add(time.Since(began), err)
			open[i] = s
			return nil
		})
	}
	_ = g.Wait()
	wall := time.Since(start)
	defer func() {
		for _, s := range open {
			if s != nil {
				s.conn.Close()
			}
		}
	}()
	res := opens.result(wall)
	if err := printLine(out, "open", Result{Mode: "sds", Ops: res.Ops, Errors: res.Errors, FirstError: res.FirstError, WallNS: res.WallNS}); err != nil {
		return Result{}, err
	}
	if pushTimeout <= 0 {
		return res, nil
	}

	var pushes tally
	at := make([]int64, 0, streams)
	var wg sync.WaitGroup
	for _, s := range open {
		if s == nil {
			continue
		}
		wg.Go(func() {
			got, err := s.next(pushTimeout)
			mu.Lock()
			defer mu.Unlock()
			pushes.add(0, err)
			if err == nil {
				at = append(at, got.UnixNano())
			}
		})
	}
	wg.Wait()
	res.Errors += pushes.errs
	if res.FirstError == "" && pushes.first != nil {
		res.FirstError = "push: " + pushes.first.Error()
	}
	res.PushAtNS = at
	return res, nil
}

// stream is one Envoy-like SDS stream on its own connection.
type stream struct {
	conn   *grpc.ClientConn
	stream secretv3.SecretDiscoveryService_StreamSecretsClient
	names  []string
	last   *discoveryv3.DiscoveryResponse
}

func openStream(ctx context.Context, socket string, names []string, timeout time.Duration) (*stream, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	s := &stream{conn: conn, names: names}
	if err := s.start(ctx, timeout); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func (s *stream) start(ctx context.Context, timeout time.Duration) error {
	var err error
	if s.stream, err = secretv3.NewSecretDiscoveryServiceClient(s.conn).StreamSecrets(ctx); err != nil {
		return err
	}
	if err := s.stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: s.names}); err != nil {
		return err
	}
	resp, err := s.recv(timeout)
	if err != nil {
		return fmt.Errorf("first response: %w", err)
	}
	if len(s.names) > 0 && len(resp.Resources) != len(s.names) {
		return fmt.Errorf("first response has %d secrets for the %d names %v", len(resp.Resources), len(s.names), s.names)
	}
	return nil
}

// recv waits for the next response and ACKs it.
func (s *stream) recv(timeout time.Duration) (*discoveryv3.DiscoveryResponse, error) {
	type got struct {
		resp *discoveryv3.DiscoveryResponse
		err  error
	}
	ch := make(chan got, 1)
	go func() {
		resp, err := s.stream.Recv()
		ch <- got{resp, err}
	}()
	select {
	case g := <-ch:
		if g.err != nil {
			return nil, g.err
		}
		s.last = g.resp
		ack := &discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: s.names, VersionInfo: g.resp.VersionInfo, ResponseNonce: g.resp.Nonce}
		if err := s.stream.Send(ack); err != nil {
			return nil, fmt.Errorf("ACK: %w", err)
		}
		return g.resp, nil
	case <-time.After(timeout):
		// The Recv goroutine ends when the connection is closed.
		return nil, fmt.Errorf("no response within %v", timeout)
	}
}

// next waits for the next response and returns when it arrived.
func (s *stream) next(timeout time.Duration) (time.Time, error) {
	if _, err := s.recv(timeout); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}
