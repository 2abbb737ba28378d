package sds

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/meshid/meshid/test/syncbuf"
)

// protocol is one kind of SDS stream, as the tests below drive it.
type protocol struct {
	name string
	// open starts a stream asking for the caller's SVID and returns what
	// receives its next message: nil for a response, else the stream's end.
	open func(t *testing.T, c secretv3.SecretDiscoveryServiceClient) (next func() error)
}

var protocols = []protocol{
	{"state of the world", func(t *testing.T, c secretv3.SecretDiscoveryServiceClient) func() error {
		e := openStream(t, c)
		e.ask(frontendID)
		return func() error { _, err := e.stream.Recv(); return err }
	}},
	{"delta", func(t *testing.T, c secretv3.SecretDiscoveryServiceClient) func() error {
		d := openDelta(t, c)
		d.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{frontendID}})
		return func() error { _, err := d.stream.Recv(); return err }
	}},
}

func wantCallerExited(t *testing.T, what string, err error) {
	t.Helper()
	if grpcstatus.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "the attested process exited") {
		t.Fatalf("%s: %v, want Unavailable saying the attested process exited", what, err)
	}
}

// A stream ends when its caller's process exits, with a status Envoy
// retries on.
func TestStreamsEndWhenTheCallerExits(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ids := newFake(t)
			next := p.open(t, startServer(t, ids))
			if err := next(); err != nil {
				t.Fatal(err)
			}
			close(ids.sub.exited)
			wantCallerExited(t, "after the exit", next())
		})
	}
}

// Nothing is sent once the caller has exited, not even the rotation the
// stream was building when it did.
func TestNothingIsSentOnceTheCallerHasExited(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ids := newFake(t)
			next := p.open(t, startServer(t, ids))
			if err := next(); err != nil {
				t.Fatal(err)
			}
			building := make(chan struct{})
			ids.sub.mu.Lock()
			ids.sub.building = building
			ids.sub.mu.Unlock()
			ids.sub.rotate(t)
			<-building // the stream is building the rotated secrets
			close(ids.sub.exited)
			building <- struct{}{}
			wantCallerExited(t, "the exit while a rotation was built", next())
		})
	}
	ids := newFake(t)
	close(ids.sub.exited)
	_, err := startServer(t, ids).FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{frontendID}})
	wantCallerExited(t, "fetch", err)
}

// What a caller sends is echoed in part: a 1 MB name, type URL or NACK
// message is cut in errors and log lines, which say how long it was.
func TestEchoedInputIsCut(t *testing.T) {
	const mb = 1 << 20
	huge := strings.Repeat("n", mb)
	long := "spiffe://example.org/" + strings.Repeat("x", maxNameLen-30) // servable length, not entitled
	tests := []struct {
		name string
		call func(c secretv3.SecretDiscoveryServiceClient) error
		size int
	}{
		{"state of the world, a 1 MB name", func(c secretv3.SecretDiscoveryServiceClient) error {
			e := openStream(t, c)
			e.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{huge}})
			return e.recvErr()
		}, mb},
		{"state of the world, a long name not entitled", func(c secretv3.SecretDiscoveryServiceClient) error {
			e := openStream(t, c)
			e.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{long}})
			return e.recvErr()
		}, len(long)},
		{"a 1 MB type URL", func(c secretv3.SecretDiscoveryServiceClient) error {
			e := openStream(t, c)
			e.send(&discoveryv3.DiscoveryRequest{TypeUrl: huge})
			return e.recvErr()
		}, mb},
		{"delta, a 1 MB name", func(c secretv3.SecretDiscoveryServiceClient) error {
			d := openDelta(t, c)
			d.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{huge}})
			_, err := d.stream.Recv()
			return err
		}, mb},
		{"delta, a 1 MB name Envoy says it holds", func(c secretv3.SecretDiscoveryServiceClient) error {
			d := openDelta(t, c)
			d.send(&discoveryv3.DeltaDiscoveryRequest{InitialResourceVersions: map[string]string{huge: "1"}})
			_, err := d.stream.Recv()
			return err
		}, mb},
		{"fetch, a 1 MB name", func(c secretv3.SecretDiscoveryServiceClient) error {
			_, err := c.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{huge}})
			return err
		}, mb},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(startServer(t, newFake(t)))
			msg := grpcstatus.Convert(err).Message()
			if grpcstatus.Code(err) != codes.InvalidArgument || len(msg) > 2*maxEcho || !strings.Contains(msg, fmt.Sprintf("… (%d bytes)", tt.size)) {
				t.Fatalf("%v: %.600s (%d bytes), want InvalidArgument, at most %d bytes, saying the input was %d bytes", grpcstatus.Code(err), msg, len(msg), 2*maxEcho, tt.size)
			}
		})
	}

	t.Run("NACK log line", func(t *testing.T) {
		var logs syncbuf.Buffer
		ids := newFake(t)
		e := openStream(t, startServerWith(t, Options{Identities: ids, Log: slog.New(slog.NewTextHandler(&logs, nil))}))
		e.ask(frontendID)
		first := e.recv()
		e.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{frontendID}, VersionInfo: huge, ResponseNonce: first.Nonce,
			ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: huge}})
		e.ask(frontendID, trustID) // answered after the NACK was logged
		e.recv()
		line := logs.String()
		if !strings.Contains(line, "NACK") || len(line) > 2*maxEchoDetail || strings.Count(line, fmt.Sprintf("… (%d bytes)", mb)) != 2 {
			t.Fatalf("NACK with a 1 MB version and message logged as %d bytes: %.600s", len(line), line)
		}
	})
}
