// Package authztest holds the ext_authz request that authz's tests and
// benchmarks and bench/authzload all send, so that the figures they report
// are about the same request. It is test and benchmark support only.
package authztest

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The demo mesh's identities, as the request carries them.
const (
	Frontend = "spiffe://example.org/ns/demo/sa/frontend"
	Backend  = "spiffe://example.org/ns/demo/sa/backend"
)

// DemoCheck is the CheckRequest Envoy 1.40 sends from the demo backend
// sidecar's inbound listener when the frontend asks for path: both peers
// with address and principal, the client certificate, a request time, and
// the 8 headers curl's request arrives with. Every call returns a new
// request, the caller's to change.
func DemoCheck(path string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{
			Address:     SocketAddress("10.0.0.7", 40112),
			Principal:   Frontend,
			Certificate: "-----BEGIN%20CERTIFICATE-----%0AMIIB...%0A-----END%20CERTIFICATE-----%0A",
		},
		Destination: &authv3.AttributeContext_Peer{Address: SocketAddress("10.0.0.8", 8443), Principal: Backend},
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

// SocketAddress is an Envoy TCP address.
func SocketAddress(ip string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}
