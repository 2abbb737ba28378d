// Command sdsfanout measures SDS rotation fan-out: how long after meshid
// re-issues an SVID the last of N Envoy-like SDS streams has received it.
//
// Everything is real but the clock: meshid's CA, identity manager, kernel
// peer credentials on a Unix socket and SDS server run in this process
// (attestation stops at the uid, as every client is this process), and N
// clients, each on its own connection as N Envoys would be, hold streams on
// that socket. A few more clients stop reading after their first response,
// to show that a stuck stream does not hold up the others. The identity
// manager's clock is moved past the SVID's renewal time; the time of the
// actual re-issue is taken inside the minter.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/node"
	"github.com/meshid/meshid/sds"
)

const (
	secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	workloadID = "spiffe://example.org/ns/bench/sa/web"
	svidTTL    = time.Hour
)

func main() {
	streams := flag.Int("streams", 1000, "SDS streams that keep reading")
	stuck := flag.Int("stuck", 20, "extra SDS streams that stop reading after their first response")
	rounds := flag.Int("rounds", 5, "rotations to measure")
	flag.Parse()
	if err := run(*streams, *stuck, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "sdsfanout:", err)
		os.Exit(1)
	}
}

// clock is the identity manager's clock, moved by hand.
type clock struct{ offset atomic.Int64 }

func (c *clock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *clock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// timedMinter records when each X509-SVID is actually issued.
type timedMinter struct {
	*ca.Authority
	mu     sync.Mutex
	issued []time.Time
}

func (m *timedMinter) MintX509SVID(req ca.SVIDRequest) (*x509svid.SVID, error) {
	svid, err := m.Authority.MintX509SVID(req)
	m.mu.Lock()
	m.issued = append(m.issued, time.Now())
	m.mu.Unlock()
	return svid, err
}

func (m *timedMinter) lastIssued() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.issued[len(m.issued)-1]
}

// uidAttestor attests by the uid the kernel reported for the connection,
// skipping procfs: every client here is this process.
type uidAttestor struct{}

func (uidAttestor) Attest(_ context.Context, c attestor.Caller) ([]attestor.Selector, error) {
	return []attestor.Selector{{Type: "unix", Value: "uid:" + strconv.FormatUint(uint64(c.UID), 10)}}, nil
}

func run(n, stuck, rounds int) error {
	dir, err := os.MkdirTemp("", "sdsfanout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	clk := &clock{}
	td := spiffeid.RequireTrustDomainFromString("example.org")
	authority, err := ca.Open(ca.Options{TrustDomain: td, Dir: filepath.Join(dir, "data"), TTL: 24 * time.Hour, Clock: clk.now})
	if err != nil {
		return err
	}
	minter := &timedMinter{Authority: authority}
	sel, err := attestor.ParseSelector("unix:uid:" + strconv.Itoa(os.Getuid()))
	if err != nil {
		return err
	}
	ids := identity.NewManager(identity.Options{
		Entries:       []identity.Entry{{SPIFFEID: spiffeid.RequireFromString(workloadID), Selectors: []attestor.Selector{sel}}},
		DefaultTTL:    svidTTL,
		DefaultJWTTTL: 5 * time.Minute,
		Minter:        minter,
		Attestor:      uidAttestor{},
		Clock:         clk.now,
		Jitter:        func() float64 { return 0 },
		Log:           slog.New(slog.DiscardHandler),
	})
	sock := filepath.Join(dir, "agent.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.Creds(attestor.PeerCredentials()))
	sds.New(sds.Options{Identities: node.SDSIdentities(ids)}).Register(srv)
	go srv.Serve(lis)
	defer srv.Stop()
	go ids.Run(ctx)

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	goroutinesBefore := runtime.NumGoroutine()

	// Open every stream and wait for each first response.
	clients := make([]*client, n+stuck)
	var g errgroup.Group
	g.SetLimit(64)
	for i := range clients {
		g.Go(func() (err error) {
			clients[i], err = dial(ctx, sock, i >= n)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	perStream := float64(after.HeapInuse-before.HeapInuse) / float64(len(clients))
	goroutinesPerStream := float64(runtime.NumGoroutine()-goroutinesBefore) / float64(len(clients))

	fmt.Printf("%d reading streams + %d stuck streams, each on its own connection, %d rotations, GOMAXPROCS=%d\n\n",
		n, stuck, rounds, runtime.GOMAXPROCS(0))
	fmt.Printf("%-8s %10s %10s %10s %10s\n", "rotation", "p50", "p90", "p99", "last")
	var all []time.Duration
	for r := 1; r <= rounds; r++ {
		clk.advance(svidTTL/2 + time.Second) // past the renewal time
		var delays []time.Duration
		for _, c := range clients[:n] {
			got, err := c.next(ctx, 10*time.Second)
			if err != nil {
				return fmt.Errorf("rotation %d: %w", r, err)
			}
			delays = append(delays, got.Sub(minter.lastIssued()))
		}
		slices.Sort(delays)
		all = append(all, delays...)
		fmt.Printf("%-8d %10s %10s %10s %10s\n", r, pct(delays, 50), pct(delays, 90), pct(delays, 99), delays[len(delays)-1].Round(time.Microsecond))
	}
	slices.Sort(all)
	p99 := quantile(all, 99)
	verdict := "PASS"
	if p99 >= time.Second {
		verdict = "ABOVE"
	}
	fmt.Printf("%-8s %10s %10s %10s %10s\n\n", "all", pct(all, 50), pct(all, 90), pct(all, 99), all[len(all)-1].Round(time.Microsecond))
	fmt.Printf("p99 from re-issue to a stream's receipt: %s   (goal < 1s)   %s\n", p99.Round(time.Microsecond), verdict)
	fmt.Printf("memory per stream (server and client, both in this process): %.1f KiB heap, %.1f goroutines\n", perStream/1024, goroutinesPerStream)
	return nil
}

func quantile(sorted []time.Duration, q int) time.Duration {
	return sorted[min(len(sorted)-1, len(sorted)*q/100)]
}

func pct(sorted []time.Duration, q int) string {
	return quantile(sorted, q).Round(time.Microsecond).String()
}

// client is one Envoy-like SDS stream on its own connection.
type client struct {
	stream   secretv3.SecretDiscoveryService_StreamSecretsClient
	received chan time.Time
}

// dial opens a stream, asks for the SVID and the bundle, takes the first
// response and ACKs it. A stuck client then stops reading.
func dial(ctx context.Context, sock string, stuck bool) (*client, error) {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		return nil, err
	}
	names := []string{workloadID, "spiffe://example.org"}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: names}); err != nil {
		return nil, err
	}
	first, err := stream.Recv()
	if err != nil {
		return nil, fmt.Errorf("first response: %w", err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: names, VersionInfo: first.VersionInfo, ResponseNonce: first.Nonce}); err != nil {
		return nil, err
	}
	c := &client{stream: stream, received: make(chan time.Time, 16)}
	if !stuck {
		go c.read(names)
	}
	return c, nil
}

// read records the arrival of each response and ACKs it, as Envoy does.
func (c *client) read(names []string) {
	for {
		resp, err := c.stream.Recv()
		if err != nil {
			return
		}
		c.received <- time.Now()
		c.stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: names, VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce})
	}
}

func (c *client) next(ctx context.Context, timeout time.Duration) (time.Time, error) {
	select {
	case t := <-c.received:
		return t, nil
	case <-time.After(timeout):
		return time.Time{}, fmt.Errorf("no new secret within %s", timeout)
	case <-ctx.Done():
		return time.Time{}, ctx.Err()
	}
}
