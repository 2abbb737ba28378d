package main
import (
	_ "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "google.golang.org/grpc"
	_ "github.com/spiffe/go-spiffe/v2/spiffeid"
	_ "github.com/open-policy-agent/opa/v1/rego"
	_ "gopkg.in/yaml.v3"
	_ "golang.org/x/sync/errgroup"
	_ "go.uber.org/goleak"
)
func main(){}
