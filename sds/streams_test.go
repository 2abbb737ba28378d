package sds

import (
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/meshid/meshid/test/grpctest"
)

// startTracked serves SDS and returns the server, for its Streams.
func startTracked(t *testing.T, ids Identities) (*Server, secretv3.SecretDiscoveryServiceClient) {
	t.Helper()
	srv := New(Options{Identities: ids})
	conn := grpctest.Serve(t, "unix", func(s *grpc.Server) { srv.Register(s) })
	return srv, secretv3.NewSecretDiscoveryServiceClient(conn)
}

func only(t *testing.T, srv *Server, api string) Stream {
	t.Helper()
	var found []Stream
	for _, s := range srv.Streams() {
		if s.API == api {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("Streams lists %d %s streams, want 1: %+v", len(found), api, srv.Streams())
	}
	return found[0]
}

// TestStreamsReportWhatAStreamHolds follows a state-of-the-world stream
// through a response, a NACK and an ACK. A stream's loop handles requests
// in order, and a response is recorded before it is sent: once the answer
// to a later request arrives, Streams shows what came before it.
func TestStreamsReportWhatAStreamHolds(t *testing.T) {
	ids := newFake(t)
	srv, c := startTracked(t, ids)
	e := openStream(t, c)
	serial := ids.sub.x.SVIDs[0].Certificates[0].SerialNumber.Text(16)

	e.ask(frontendID, trustID)
	first := e.recv()
	s := only(t, srv, apiSotW)
	if s.Version != "1" || s.Responses != 1 || s.NodeID != "test" || s.Subscription != ids.sub {
		t.Fatalf("after the first response: %+v", s)
	}
	if len(s.Resources) != 2 || s.Resources[0].Name != trustID || s.Resources[1].Name != frontendID {
		t.Fatalf("resources %+v, want the bundle and the SVID", s.Resources)
	}
	if r := s.Resources[1]; r.Serial != serial || r.Version != "1" || r.Expires.IsZero() {
		t.Errorf("SVID resource %+v, want serial %s at version 1", r, serial)
	}
	if s.Resources[0].Serial != "" || !s.LastACK.IsZero() || s.LastNACK != nil {
		t.Errorf("before any ACK: %+v", s)
	}

	// A NACK of version 1, then a new request that still holds nothing
	// (version 0): its answer shows the NACK, and no ACK.
	e.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{frontendID, trustID}, VersionInfo: "0", ResponseNonce: first.Nonce,
		ErrorDetail: &status.Status{Code: int32(codes.InvalidArgument), Message: "Failed to load certificate chain"}})
	e.send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{frontendID}, VersionInfo: "0", ResponseNonce: first.Nonce})
	e.recv()
	s = only(t, srv, apiSotW)
	if s.LastNACK == nil || s.LastNACK.Message != "Failed to load certificate chain" || s.LastNACK.Version != "1" {
		t.Fatalf("after a NACK: last NACK %+v", s.LastNACK)
	}
	if s.Version != "2" || len(s.Resources) != 1 || s.Resources[0].Version != "2" {
		t.Errorf("after the second response: %+v", s)
	}
	if !s.LastACK.IsZero() {
		t.Errorf("a NACK was taken for an ACK at %s", s.LastACK)
	}
	e.ask(frontendID, trustID) // acknowledges version 2 and asks for more
	e.recv()
	if s = only(t, srv, apiSotW); s.LastACK.IsZero() {
		t.Error("an ACK is not recorded")
	}

}

// TestStreamsReportDeltaVersions: a delta stream's resources carry each
// its own version, as sent, and the SVID of the latest push.
func TestStreamsReportDeltaVersions(t *testing.T) {
	ids := newFake(t)
	srv, c := startTracked(t, ids)
	d := openDelta(t, c)
	d.send(&discoveryv3.DeltaDiscoveryRequest{})
	resp := d.recv()
	ds := only(t, srv, apiDelta)
	if ds.Version != "1" || len(ds.Resources) != len(resp.Resources) {
		t.Fatalf("delta stream %+v, want the %d resources of system version 1", ds, len(resp.Resources))
	}
	for _, r := range resp.Resources {
		found := false
		for _, got := range ds.Resources {
			if got.Name == r.Name && got.Version == r.Version {
				found = true
			}
		}
		if !found {
			t.Errorf("delta resource %s at %s missing from %+v", r.Name, r.Version, ds.Resources)
		}
	}
	ids.sub.rotate(t)
	d.recv()
	d.send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: d.last.Nonce, ErrorDetail: &status.Status{Message: "rejected"}})
	d.send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"default"}})
	d.recv()
	ds = only(t, srv, apiDelta)
	if ds.LastNACK == nil || ds.LastNACK.Message != "rejected" || ds.LastNACK.Version != "2" {
		t.Errorf("delta NACK %+v, want version 2 rejected", ds.LastNACK)
	}
	rotated := ids.sub.x.SVIDs[0].Certificates[0].SerialNumber.Text(16)
	for _, r := range ds.Resources {
		if (r.Name == frontendID || r.Name == "default") && r.Serial != rotated {
			t.Errorf("delta resource %s has serial %s, want the rotated %s", r.Name, r.Serial, rotated)
		}
	}
}
