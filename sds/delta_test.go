package sds

import (
	"context"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// deltaEnvoy is a scripted client on one delta stream.
type deltaEnvoy struct {
	t      *testing.T
	stream secretv3.SecretDiscoveryService_DeltaSecretsClient
	last   *discoveryv3.DeltaDiscoveryResponse
}

func openDelta(t *testing.T, c secretv3.SecretDiscoveryServiceClient) *deltaEnvoy {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	stream, err := c.DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &deltaEnvoy{t: t, stream: stream}
}

func (d *deltaEnvoy) send(req *discoveryv3.DeltaDiscoveryRequest) {
	d.t.Helper()
	req.TypeUrl = secretType
	req.Node = &corev3.Node{Id: "test"}
	if err := d.stream.Send(req); err != nil {
		d.t.Fatal(err)
	}
}

// ack acknowledges the last response.
func (d *deltaEnvoy) ack() { d.send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: d.last.Nonce}) }

func (d *deltaEnvoy) recv() *discoveryv3.DeltaDiscoveryResponse {
	d.t.Helper()
	resp, err := d.stream.Recv()
	if err != nil {
		d.t.Fatalf("Recv: %v", err)
	}
	d.last = resp
	return resp
}

func names(resp *discoveryv3.DeltaDiscoveryResponse) []string {
	var out []string
	for _, r := range resp.Resources {
		out = append(out, r.Name)
	}
	slices.Sort(out)
	return out
}

// TestDelta drives one delta stream through subscriptions, ACKs, rotation
// and withdrawal. Each expected response is checked for exactly the
// resources that changed and the names removed; an unwanted response would
// be received in place of the next expected one and fail that step.
func TestDelta(t *testing.T) {
	ids := newFake(t)
	d := openDelta(t, startServer(t, ids))

	// The first request without names subscribes to everything.
	d.send(&discoveryv3.DeltaDiscoveryRequest{})
	first := d.recv()
	if got := names(first); !slices.Equal(got, []string{trustID, frontendID}) || first.SystemVersionInfo != "1" {
		t.Fatalf("wildcard: got %v (system version %q), want both secrets at version 1", got, first.SystemVersionInfo)
	}
	for _, r := range first.Resources {
		if r.Version == "" {
			t.Errorf("resource %s has no version", r.Name)
		}
	}
	d.ack()

	// Subscribing to an alias sends just that one.
	d.send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: d.last.Nonce, ResourceNamesSubscribe: []string{"ROOTCA"}})
	if got := names(d.recv()); !slices.Equal(got, []string{"ROOTCA"}) {
		t.Fatalf("subscribe ROOTCA: got %v", got)
	}
	d.ack()

	// A rotation sends only the SVID: the bundles did not change.
	ids.sub.rotate(t)
	rotated := d.recv()
	if got := names(rotated); !slices.Equal(got, []string{frontendID}) || len(rotated.RemovedResources) != 0 {
		t.Fatalf("rotation: got %v removed %v, want only %s", got, rotated.RemovedResources, frontendID)
	}
	d.ack()

	// The entry disappears: everything the caller held is removed.
	ids.sub.set(ids.sub.ca.context(t))
	withdrawn := d.recv()
	slices.Sort(withdrawn.RemovedResources)
	if want := []string{"ROOTCA", trustID, frontendID}; len(withdrawn.Resources) != 0 || !slices.Equal(withdrawn.RemovedResources, want) {
		t.Fatalf("withdrawal: got %v removed %v, want removed %v", names(withdrawn), withdrawn.RemovedResources, want)
	}
	d.ack()

	// It comes back: the secrets return.
	ids.sub.rotate(t)
	if got := names(d.recv()); !slices.Equal(got, []string{"ROOTCA", trustID, frontendID}) {
		t.Fatalf("re-entitled: got %v", got)
	}
}

func TestDeltaReconnectDoesNotResendWhatEnvoyHolds(t *testing.T) {
	ids := newFake(t)
	c := startServer(t, ids)
	d := openDelta(t, c)
	d.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{frontendID, trustID}})
	first := d.recv()
	held := map[string]string{}
	for _, r := range first.Resources {
		held[r.Name] = r.Version
	}

	again := openDelta(t, c)
	again.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{frontendID, trustID, "ROOTCA"}, InitialResourceVersions: held})
	if got := names(again.recv()); !slices.Equal(got, []string{"ROOTCA"}) {
		t.Fatalf("after reconnect got %v, want only the secret Envoy did not hold", got)
	}
}

func TestDeltaNamesNotEntitledAreAbsentNotFatal(t *testing.T) {
	ids := newFake(t)
	d := openDelta(t, startServer(t, ids))
	d.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"spiffe://example.org/someone-else", frontendID}})
	if got := names(d.recv()); !slices.Equal(got, []string{frontendID}) {
		t.Fatalf("got %v, want only the entitled secret", got)
	}
}

func TestDeltaWithoutIdentityIsRefused(t *testing.T) {
	ids := newFake(t)
	ids.sub.x = ids.sub.ca.context(t)
	d := openDelta(t, startServer(t, ids))
	d.send(&discoveryv3.DeltaDiscoveryRequest{})
	if _, err := d.stream.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("err = %v, want PermissionDenied", err)
	}
}

func TestFetchSecrets(t *testing.T) {
	ids := newFake(t)
	c := startServer(t, ids)
	ctx := context.Background()
	fetch := func(names ...string) (*discoveryv3.DiscoveryResponse, error) {
		return c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: names})
	}
	a, err := fetch(frontendID, "ALL")
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Resources) != 2 || a.VersionInfo == "" {
		t.Fatalf("fetch = %d resources, version %q", len(a.Resources), a.VersionInfo)
	}
	s := &tlsv3.Secret{}
	if err := a.Resources[1].UnmarshalTo(s); err != nil || s.GetValidationContext().GetCustomValidatorConfig() == nil {
		t.Fatalf("ALL = %v (%v), want the SPIFFE validator", s, err)
	}
	b, _ := fetch(frontendID, "ALL")
	if a.VersionInfo != b.VersionInfo {
		t.Error("equal content fetched twice has two versions")
	}
	ids.sub.rotate(t)
	if c, _ := fetch(frontendID, "ALL"); c.VersionInfo == a.VersionInfo {
		t.Error("new content kept the old version")
	}
	if _, err := fetch("spiffe://example.org/someone-else"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("not entitled: err = %v, want InvalidArgument", err)
	}
}
