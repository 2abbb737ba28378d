package authz_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/test/authztest"
)

// BenchmarkCheck is one ext_authz Check as Envoy sends it from the demo
// backend's inbound listener, decided by the shipped reference policy
// (policies/envoy: SPIFFE IDs, method and path): input document, policy
// evaluation, CheckResponse with decision id, metrics; /cached the same
// answered from the decision cache (every call after the first hits it).
// gRPC is not in it: bench/authz.sh measures the whole server.
func BenchmarkCheck(b *testing.B) {
	e, err := authz.NewEngine(context.Background(), authz.Config{PolicyDir: "../policies/envoy"})
	if err != nil {
		b.Fatal(err)
	}
	plain := newServer(b, e, authz.Options{})
	cached := newServer(b, e, authz.Options{Cache: authz.CacheOptions{Enabled: true, MaxEntries: 100}})
	for _, bc := range []struct {
		name    string
		srv     *authz.Server
		path    string
		allowed bool
	}{
		{"allow", plain, "/hello?lang=fr", true},
		{"deny", plain, "/admin", false},
		{"allow/cached", cached, "/hello?lang=fr", true},
		{"deny/cached", cached, "/admin", false},
	} {
		srv := bc.srv
		b.Run(bc.name, func(b *testing.B) {
			req := authztest.DemoCheck(bc.path)
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
