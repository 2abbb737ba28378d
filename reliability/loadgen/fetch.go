package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// fetch is a well-behaved client: -n times, one after another and at most
// one every -interval, it connects, calls FetchSecrets for -names and
// hangs up, and records how long each took in all. An answer without one
// secret per name is a failure.
func fetch(ctx context.Context, args []string, _ io.Writer) (Result, error) {
	var (
		socket, names     string
		n                 int
		interval, timeout time.Duration
	)
	flags("fetch", args, func(fs *flag.FlagSet) {
		fs.StringVar(&socket, "socket", "", "meshid's socket")
		fs.StringVar(&names, "names", "", "resource names, comma-separated")
		fs.IntVar(&n, "n", 300, "fetches")
		fs.DurationVar(&interval, "interval", 10*time.Millisecond, "least time between the starts of two fetches")
		fs.DurationVar(&timeout, "timeout", 10*time.Second, "deadline of each fetch, connection included")
	})
	var resources []string
	if names != "" {
		resources = strings.Split(names, ",")
	}
	var t tally
	tick := time.NewTicker(interval)
	defer tick.Stop()
	start := time.Now()
	for i := range n {
		if i > 0 {
			<-tick.C
		}
		began := time.Now()
		err := fetchOnce(ctx, socket, resources, timeout)
		t.add(time.Since(began), err)
	}
	return t.result(time.Since(start)), nil
}

func fetchOnce(ctx context.Context, socket string, names []string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx,
		&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: names})
	if err != nil {
		return err
	}
	if len(names) > 0 && len(resp.Resources) != len(names) {
		return fmt.Errorf("%d secrets for the %d names %v", len(resp.Resources), len(names), names)
	}
	return nil
}
