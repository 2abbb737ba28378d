package sds

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// FuzzRequests feeds arbitrary bytes, decoded as SotW and as delta
// requests, through the request handling a stream does: validation, names,
// the secrets built for them, delta bookkeeping. Nothing may panic, and
// every refusal must be a gRPC status, as the handler returns it.
func FuzzRequests(f *testing.F) {
	meta, _ := structpb.NewStruct(map[string]any{"disable_spiffe_cert_validation": true})
	for _, req := range []proto.Message{
		&discoveryv3.DiscoveryRequest{TypeUrl: secretType, ResourceNames: []string{frontendID, "ALL", "ROOTCA", "default"}},
		&discoveryv3.DiscoveryRequest{ResourceNames: []string{"spiffe://example.org", ""}, Node: &corev3.Node{Metadata: meta}},
		&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"*", frontendID}, ResourceNamesUnsubscribe: []string{"ALL"},
			InitialResourceVersions: map[string]string{frontendID: "x"}},
	} {
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	ca := newTestCA(f)
	sub := &fakeSub{ca: ca, x: ca.context(f, frontendID, backendID), changed: make(chan struct{}, 1)}

	f.Fuzz(func(t *testing.T, data []byte) {
		var sotw discoveryv3.DiscoveryRequest
		if proto.Unmarshal(data, &sotw) == nil {
			err := checkRequest(sotw.TypeUrl, sotw.ResourceNames)
			if err == nil {
				_, err = view{x: sub.x, plainTrustedCA: wantsPlainTrustedCA(sotw.Node)}.secrets(sotw.ResourceNames)
			}
			mustBeStatus(t, err)
		}
		var delta discoveryv3.DeltaDiscoveryRequest
		if proto.Unmarshal(data, &delta) == nil {
			st := newDeltaState()
			err := st.apply(&delta)
			if err == nil {
				_, err = st.next(sub)
			}
			mustBeStatus(t, err)
		}
	})
}

func mustBeStatus(t *testing.T, err error) {
	t.Helper()
	if _, ok := status.FromError(err); err != nil && !ok {
		t.Fatalf("refusal is not a gRPC status: %v", err)
	}
}
