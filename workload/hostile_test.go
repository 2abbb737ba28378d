package workload

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// watchCall is one of the Workload API's streams: open returns what
// receives its next message (nil for a response, else the stream's end).
type watchCall struct {
	name string
	open func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) (next func() error, err error)
}

var watchCalls = []watchCall{
	{"FetchX509SVID", func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) (func() error, error) {
		s, err := c.FetchX509SVID(ctx, &workloadpb.X509SVIDRequest{})
		return func() error { _, err := s.Recv(); return err }, err
	}},
	{"FetchX509Bundles", func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) (func() error, error) {
		s, err := c.FetchX509Bundles(ctx, &workloadpb.X509BundlesRequest{})
		return func() error { _, err := s.Recv(); return err }, err
	}},
	{"FetchJWTBundles", func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) (func() error, error) {
		s, err := c.FetchJWTBundles(ctx, &workloadpb.JWTBundlesRequest{})
		return func() error { _, err := s.Recv(); return err }, err
	}},
}

func wantCallerExited(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "the attested process exited") {
		t.Fatalf("%s: %v, want Unavailable saying the attested process exited", what, err)
	}
}

// Every stream ends when its caller's process exits, with a status
// go-spiffe retries on.
func TestStreamsEndWhenTheCallerExits(t *testing.T) {
	for _, w := range watchCalls {
		t.Run(w.name, func(t *testing.T) {
			f := newFake(t, webID)
			c, ctx := client(t, f)
			next, err := w.open(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if err := next(); err != nil {
				t.Fatal(err)
			}
			close(f.exited)
			wantCallerExited(t, "after the exit", next())
		})
	}
}

// Nothing is sent once the caller has exited, not even the rotation the
// stream was building when it did; unary calls refuse it.
func TestNothingIsSentOnceTheCallerHasExited(t *testing.T) {
	for _, w := range watchCalls[:2] { // what a rotation changes; FetchJWTBundles sends the same keys
		t.Run(w.name, func(t *testing.T) {
			f := newFake(t, webID)
			c, ctx := client(t, f)
			next, err := w.open(ctx, c)
			if err != nil {
				t.Fatal(err)
			}
			if err := next(); err != nil {
				t.Fatal(err)
			}
			building := make(chan struct{})
			rotated := newFake(t, webID)
			f.mu.Lock()
			f.x, f.building = rotated.x, building
			f.mu.Unlock()
			f.changed <- struct{}{}
			<-building // the stream is building the rotated response
			close(f.exited)
			building <- struct{}{}
			wantCallerExited(t, "the exit while a rotation was built", next())
		})
	}

	f := newFake(t, webID)
	c, ctx := client(t, f)
	close(f.exited)
	_, err := c.FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"api"}})
	wantCallerExited(t, "FetchJWTSVID", err)
	_, err = c.ValidateJWTSVID(ctx, &workloadpb.ValidateJWTSVIDRequest{Audience: "api", Svid: f.sign(webID.String(), []string{"api"}, time.Now().Add(time.Minute))})
	wantCallerExited(t, "ValidateJWTSVID", err)
}

// A 1 MB SPIFFE ID or audience is echoed in part, saying how long it was.
func TestEchoedInputIsCut(t *testing.T) {
	const mb = 1 << 20
	huge := strings.Repeat("a", mb)
	notHeld := "spiffe://example.org/" + huge
	f := newFake(t, webID)
	token := f.sign(webID.String(), []string{"api"}, time.Now().Add(time.Minute))
	tests := []struct {
		name  string
		call  func(context.Context, workloadpb.SpiffeWorkloadAPIClient) error
		code  codes.Code
		size  int
		bound int
	}{
		{"FetchJWTSVID, a malformed 1 MB spiffe_id", func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) error {
			_, err := c.FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"api"}, SpiffeId: huge})
			return err
		}, codes.InvalidArgument, mb, 2 * maxEcho},
		{"FetchJWTSVID, a 1 MB spiffe_id not held", func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) error {
			_, err := c.FetchJWTSVID(ctx, &workloadpb.JWTSVIDRequest{Audience: []string{"api"}, SpiffeId: notHeld})
			return err
		}, codes.PermissionDenied, len(notHeld), 2 * maxEcho},
		{"ValidateJWTSVID, a 1 MB audience", func(ctx context.Context, c workloadpb.SpiffeWorkloadAPIClient) error {
			_, err := c.ValidateJWTSVID(ctx, &workloadpb.ValidateJWTSVIDRequest{Audience: huge, Svid: token})
			return err
		}, codes.InvalidArgument, 0, maxEchoDetail + 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ctx := client(t, f)
			err := tt.call(ctx, c)
			msg := status.Convert(err).Message()
			if status.Code(err) != tt.code || len(msg) > tt.bound || !strings.Contains(msg, "bytes)") {
				t.Fatalf("%v: %.600s (%d bytes), want %v, at most %d bytes, cut", status.Code(err), msg, len(msg), tt.code, tt.bound)
			}
			if tt.size != 0 && !strings.Contains(msg, fmt.Sprintf("… (%d bytes)", tt.size)) {
				t.Fatalf("%.600s: does not say the input was %d bytes", msg, tt.size)
			}
		})
	}
}
