package node

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshid/meshid/test/authztest"
)

// TestNodeDecisionCache: meshid run with the default authz.cache answers
// repeated requests over gRPC from its decision cache, each with its own
// decision id, and says so on /metrics.
func TestNodeDecisionCache(t *testing.T) {
	cfg := nodeConfig(t)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if !cfg.Authz.Cache.Enabled {
		t.Fatal("the decision cache is off by default")
	}
	ctx := runNode(t, cfg)
	conn, err := grpc.NewClient(cfg.Authz.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	ids := map[string]bool{}
	for i := range 6 {
		path, want := "/hello", codes.OK
		if i%2 == 1 {
			path, want = "/admin", codes.PermissionDenied
		}
		req := authztest.DemoCheck(path)
		req.Attributes.Request.Http.Headers["x-request-id"] = fmt.Sprint("request-", i)
		resp, err := client.Check(callCtx, req)
		if err != nil || codes.Code(resp.GetStatus().GetCode()) != want {
			t.Fatalf("%s: %v, %v; want %v", path, resp.GetStatus(), err, want)
		}
		_, id := authztest.WithoutDecisionID(t, resp)
		if ids[id] {
			t.Fatalf("decision id %s twice", id)
		}
		ids[id] = true
	}
	metrics := adminGet(t, cfg.Admin.Address, "/metrics")
	for series, want := range map[string]string{"meshid_authz_cache_hits_total": "4", "meshid_authz_cache_misses_total": "2"} {
		m := regexp.MustCompile(`(?m)^` + series + ` (\S+)$`).FindStringSubmatch(metrics)
		if m == nil || m[1] != want {
			t.Errorf("%s = %v, want %s", series, m, want)
		}
	}
}
