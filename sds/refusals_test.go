package sds

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/meshid/meshid/test/syncbuf"
)

// A name the caller is not entitled to is refused on every protocol and
// meshid says so: once per caller for a burst (paced), every one counted.
// Delta keeps the stream but leaves the name absent, logging it once per
// stream, not on every response after.
func TestRefusedResourceIsLoggedAndCounted(t *testing.T) {
	const wrong = "spiffe://example.org/not-mine"
	var logs syncbuf.Buffer
	reg := prometheus.NewRegistry()
	ids := newFake(t)
	c := startServerWith(t, Options{Identities: ids, Registerer: reg, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, fetchErr := c.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{wrong}})
	e := openStream(t, c)
	e.ask(wrong)
	sotwErr := e.recvErr()
	for api, err := range map[string]error{"fetch": fetchErr, "state of the world": sotwErr} {
		if grpcstatus.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "not an identity or trust domain this caller is entitled to") {
			t.Errorf("%s: err = %v, want InvalidArgument naming the refusal", api, err)
		}
	}

	d := openDelta(t, c)
	d.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{frontendID, wrong}})
	if resp := d.recv(); len(resp.Resources) != 1 || resp.Resources[0].Name != frontendID {
		t.Fatalf("delta answered %d resources, want only %s", len(resp.Resources), frontendID)
	}
	d.ack()
	ids.sub.rotate(t) // a new response: wrong is still absent, not refused again
	d.recv()

	if got := counter(t, reg, "meshid_sds_refused_resources_total"); got != 3 {
		t.Errorf("meshid_sds_refused_resources_total = %v, want 3 (fetch, sotw, delta once)", got)
	}
	lines := strings.Count(logs.String(), "refused SDS resources")
	if lines != 1 || !strings.Contains(logs.String(), wrong) || !strings.Contains(logs.String(), "entitled_to") {
		t.Errorf("%d refusal lines (want 1: one caller, paced), naming the resource and what the caller may have:\n%s", lines, logs.String())
	}
}
