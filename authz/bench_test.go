package authz_test

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshid/meshid/authz"
)

// BenchmarkCheck is one ext_authz Check as Envoy sends it from the demo
// backend's inbound listener, decided by the shipped reference policy
// (policies/envoy: SPIFFE IDs, method and path): input document, policy
// evaluation, CheckResponse with decision id, metrics. gRPC is not in it:
// bench/authz.sh measures the whole server.
func BenchmarkCheck(b *testing.B) {
	e, err := authz.NewEngine(context.Background(), authz.Config{PolicyDir: "../policies/envoy"})
	if err != nil {
		b.Fatal(err)
	}
	srv := newServer(b, e, authz.Options{})
	for _, bc := range []struct {
		name    string
		path    string
		allowed bool
	}{
		{"allow", "/hello?lang=fr", true},
		{"deny", "/admin", false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := benchRequest(bc.path)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := srv.Check(ctx, req)
				if err != nil {
					b.Fatal(err)
				}
				if got := codes.Code(resp.GetStatus().GetCode()) == codes.OK; got != bc.allowed {
					b.Fatalf("allowed = %v, want %v", got, bc.allowed)
				}
			}
		})
	}
}

func benchRequest(path string) *authv3.CheckRequest {
	sock := func(ip string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Address:     sock("10.0.0.7", 40112),
			Principal:   frontend,
			Certificate: "-----BEGIN%20CERTIFICATE-----%0AMIIB...%0A-----END%20CERTIFICATE-----%0A",
		},
		Destination: &authv3.AttributeContext_Peer{Address: sock("10.0.0.8", 8443), Principal: backend},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:     "13461337126245466937",
				Method: "GET",
				Headers: map[string]string{
					":authority": "backend:8443", ":method": "GET", ":path": path, ":scheme": "https",
					"user-agent": "curl/8.5.0", "accept": "*/*", "x-forwarded-proto": "https",
					"x-request-id": "6f1c2d9e-0b7a-4c1e-9a55-1f0f2b3c4d5e",
				},
				Path: path, Host: "backend:8443", Scheme: "https", Protocol: "HTTP/1.1",
			},
		},
		MetadataContext: &corev3.Metadata{},
	}}
}
