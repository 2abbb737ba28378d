//go:build reliability

package reliability

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/test/harness"
)

// TestHostileCallers are the smaller findings of issue 13, each a caller
// that costs meshid more than it should: a resource name of a megabyte
// echoed whole into errors and logs, unregistered callers that make meshid
// log a WARN line each, and JWT-SVIDs whose audiences are as large as the
// caller likes, all cached.
func TestHostileCallers(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: loadEntries()})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("unix://"+m.SocketPath, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	t.Run("a 1 MB resource name is refused and echoed in part", func(t *testing.T) {
		const maxEcho = 2 << 10 // bytes of the name an error or a log line may repeat
		huge := "spiffe://example.org/" + strings.Repeat("x", 1<<20)
		_, fetchErr := secretv3.NewSecretDiscoveryServiceClient(cc).FetchSecrets(ctx,
			&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{huge}})
		stream, err := secretv3.NewSecretDiscoveryServiceClient(cc).StreamSecrets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{huge}}); err != nil {
			t.Fatal(err)
		}
		_, streamErr := stream.Recv()
		for call, err := range map[string]error{"FetchSecrets": fetchErr, "StreamSecrets": streamErr} {
			msg := status.Convert(err).Message()
			if status.Code(err) != codes.InvalidArgument || len(msg) > maxEcho || !strings.Contains(msg, strconv.Itoa(len(huge))+" bytes") {
				t.Errorf("%s with a %d-byte name: %v (%d bytes), want InvalidArgument, at most %d bytes, saying how long the name was", call, len(huge), status.Code(err), len(msg), maxEcho)
			}
			t.Logf("%s: %s", call, msg)
		}
		longest := longestLine(m.Logs())
		if longest > maxEcho+1024 {
			t.Errorf("meshid's log has a line of %d bytes", longest)
		}
		report(t, "a 1 MB SDS resource name (FetchSecrets, StreamSecrets): InvalidArgument saying how long it was, echoed in <= 2 KiB, no long line in meshid's log",
			"error messages %d and %d bytes; longest log line %d bytes", len(status.Convert(fetchErr).Message()), len(status.Convert(streamErr).Message()), longest)
	})

	t.Run("unregistered callers get one WARN line per 10s", func(t *testing.T) {
		const calls = 500
		before := metric(t, ctx, m, "meshid_unmatched_callers_total")
		start := time.Now()
		r := runLoadgen(t, ctx, env, "unregistered", 1301, "fetch", "-socket", m.SocketPath, "-names", loadID,
			"-n", strconv.Itoa(calls), "-interval", "1ms")
		took := time.Since(start)
		if r.Errors != calls || !strings.Contains(r.FirstError, "PermissionDenied") {
			t.Errorf("%d of %d fetches by an unregistered uid failed (first: %s), want all, PermissionDenied", r.Errors, calls, r.FirstError)
		}
		if got := metric(t, ctx, m, "meshid_unmatched_callers_total") - before; got < calls {
			t.Errorf("meshid_unmatched_callers_total rose by %.0f, want at least %d", got, calls)
		}
		var lines []string
		for line := range strings.SplitSeq(m.Logs(), "\n") {
			if strings.Contains(line, "no entry matches caller") && strings.Contains(line, "uid=1301") {
				lines = append(lines, line)
			}
		}
		if want := 1 + int(took/(10*time.Second)); len(lines) == 0 || len(lines) > want {
			t.Errorf("meshid logged %d WARN lines for %d refusals of uid 1301 in %v, want 1 to %d", len(lines), calls, round(took), want)
		}
		report(t, "500 calls by an unregistered uid: all PermissionDenied, all counted in meshid_unmatched_callers_total, <= 1 WARN line per 10s",
			"%d refusals of uid 1301 in %v: %d WARN line(s)", calls, round(took), len(lines))
	})

	t.Run("JWT-SVIDs with huge audiences are not all cached", func(t *testing.T) {
		const (
			tokens   = 200
			audBytes = 256 << 10
			// Cached whole, 200 such tokens would hold some 170 MB (the
			// audience in the key, in the claims and, base64url, in the
			// token); the cache's bound is 4 MiB. The rest is garbage the
			// collector returns (heap floor 32 MiB).
			maxGrowth = 96 << 20
		)
		client := workload.NewSpiffeWorkloadAPIClient(cc)
		wctx := metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
		rssBefore := metric(t, ctx, m, "process_resident_memory_bytes")
		start := time.Now()
		for i := range tokens {
			aud := fmt.Sprintf("%08d", i) + strings.Repeat("a", audBytes)
			resp, err := client.FetchJWTSVID(wctx, &workload.JWTSVIDRequest{Audience: []string{aud}}, grpc.MaxCallRecvMsgSize(16<<20))
			if err != nil || len(resp.Svids) != 1 {
				t.Fatalf("JWT-SVID %d: %v", i, err)
			}
		}
		took := time.Since(start)
		rssAfter := metric(t, ctx, m, "process_resident_memory_bytes")
		growth := rssAfter - rssBefore
		if growth > maxGrowth {
			t.Errorf("meshid's resident memory grew by %.0f MiB for %d JWT-SVIDs with %d KiB audiences, want under %d MiB", growth/(1<<20), tokens, audBytes>>10, maxGrowth>>20)
		}
		t.Logf("%d JWT-SVIDs with %d KiB audiences in %v: RSS %.1f MiB before, %.1f MiB after", tokens, audBytes>>10, round(took), rssBefore/(1<<20), rssAfter/(1<<20))
		report(t, fmt.Sprintf("%d JWT-SVIDs with distinct %d KiB audiences: meshid's RSS grows < %d MiB (the cache is bounded by bytes)", tokens, audBytes>>10, maxGrowth>>20),
			"RSS %.1f MiB before, %.1f MiB after, in %v", rssBefore/(1<<20), rssAfter/(1<<20), round(took))
	})
}

func longestLine(s string) int {
	n := 0
	for line := range strings.SplitSeq(s, "\n") {
		n = max(n, len(line))
	}
	return n
}
