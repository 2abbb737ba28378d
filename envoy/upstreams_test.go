package envoy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

// compose is the sidecar of a compose service calling two others by name.
func compose() envoy.Sidecar {
	return envoy.Sidecar{
		AdminAddr:   "127.0.0.1:9901",
		SDSSocket:   "/run/meshid/agent.sock",
		SPIFFEID:    "spiffe://example.org/compose/web",
		TrustDomain: "example.org",
		Inbound:     &envoy.Inbound{ListenAddr: "0.0.0.0:8443", AppAddr: "127.0.0.1:8080", AuthzAddr: "meshid:9191"},
		Outbound: &envoy.Outbound{ListenAddr: "127.0.0.1:15001", Upstreams: []envoy.Upstream{
			{Name: "api", SPIFFEID: "spiffe://example.org/compose/api", Addr: "api:8443"},
			{Name: "db", SPIFFEID: "spiffe://example.org/compose/db", Addr: "10.0.0.7:8443"},
		}},
	}
}

func TestRenderUpstreams(t *testing.T) {
	doc := render(t, compose())
	clusters := byName(t, lookup(t, doc, "static_resources.clusters"))
	for name, want := range map[string]struct {
		typ, host string
		port      int
		peer      string
	}{
		"upstream_api": {"STRICT_DNS", "api", 8443, "spiffe://example.org/compose/api"},
		"upstream_db":  {"STATIC", "10.0.0.7", 8443, "spiffe://example.org/compose/db"},
	} {
		c := clusters[name]
		if c == nil {
			t.Fatalf("no cluster %s among %v", name, clusters)
		}
		addr := lookup(t, c, "load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.socket_address")
		if lookup(t, c, "type") != want.typ || lookup(t, addr, "address") != want.host || lookup(t, addr, "port_value") != want.port {
			t.Errorf("cluster %s = %v", name, c)
		}
		tls := lookup(t, c, "transport_socket.typed_config.common_tls_context")
		if got := lookup(t, tls, "combined_validation_context.default_validation_context.match_typed_subject_alt_names.0.matcher.exact"); got != want.peer {
			t.Errorf("cluster %s pins %v, want %s", name, got, want.peer)
		}
		checkSDS(t, name+" cert", lookup(t, tls, "tls_certificate_sds_secret_configs.0"), "spiffe://example.org/compose/web")
	}
	if _, ok := clusters["peer"]; ok {
		t.Error("a catch-all peer cluster without -peer")
	}
	if got := lookup(t, clusters["meshid_authz"], "type"); got != "STRICT_DNS" {
		t.Errorf("meshid_authz on a name is %v", got)
	}
	if got := lookup(t, clusters["meshid_authz"], "dns_lookup_family"); got != "V4_PREFERRED" {
		t.Errorf("dns_lookup_family = %v", got)
	}
	if got := lookup(t, clusters["local_app"], "type"); got != "STATIC" {
		t.Errorf("local_app on an IP is %v", got)
	}

	out := byName(t, lookup(t, doc, "static_resources.listeners"))["outbound"]
	hcm := lookup(t, out, "filter_chains.0.filters.0.typed_config")
	if lookup(t, hcm, "strip_any_host_port") != true {
		t.Error("outbound routes on host:port")
	}
	vhosts := lookup(t, hcm, "route_config.virtual_hosts").([]any)
	if len(vhosts) != 2 || lookup(t, vhosts[0], "domains.0") != "api" || lookup(t, vhosts[0], "routes.0.route.cluster") != "upstream_api" ||
		lookup(t, vhosts[1], "domains.0") != "db" || lookup(t, vhosts[1], "routes.0.route.cluster") != "upstream_db" {
		t.Errorf("virtual hosts = %v", vhosts)
	}

	// LOGICAL_DNS on request, and a catch-all peer beside named ones.
	s := compose()
	s.DNS = envoy.DNSLogical
	s.Outbound.PeerAddr, s.Outbound.PeerSPIFFEID = "legacy.internal:8443", "spiffe://example.org/legacy"
	doc = render(t, s)
	clusters = byName(t, lookup(t, doc, "static_resources.clusters"))
	if lookup(t, clusters["upstream_api"], "type") != "LOGICAL_DNS" || lookup(t, clusters["peer"], "type") != "LOGICAL_DNS" {
		t.Errorf("-dns logical: %v, %v", lookup(t, clusters["upstream_api"], "type"), lookup(t, clusters["peer"], "type"))
	}
	vhosts = lookup(t, byName(t, lookup(t, doc, "static_resources.listeners"))["outbound"], "filter_chains.0.filters.0.typed_config.route_config.virtual_hosts").([]any)
	if len(vhosts) != 3 || lookup(t, vhosts[2], "domains.0") != "*" || lookup(t, vhosts[2], "routes.0.route.cluster") != "peer" {
		t.Errorf("virtual hosts with a catch-all = %v", vhosts)
	}
}

func TestRenderRejectsBadUpstreams(t *testing.T) {
	up := func(name, id, addr string) func(*envoy.Sidecar) {
		return func(s *envoy.Sidecar) {
			s.Outbound.Upstreams = append(s.Outbound.Upstreams, envoy.Upstream{Name: name, SPIFFEID: id, Addr: addr})
		}
	}
	const id = "spiffe://example.org/x"
	tests := []struct {
		name   string
		modify func(*envoy.Sidecar)
		want   string
	}{
		{"duplicate name", up("API", id, "x:1"), `Sidecar.Upstream "API" is given twice`},
		{"name not a name", up("a b", id, "x:1"), `Sidecar.Upstream "a b" name: "a b" is not a host name`},
		{"no name", up("", id, "x:1"), "Sidecar.Upstream has no name"},
		{"bad SPIFFE ID", up("x", "spiffe://example.org/../x", "x:1"), `Sidecar.Upstream "x" SPIFFE ID "spiffe://example.org/../x" is not a SPIFFE ID`},
		{"no SPIFFE ID", up("x", "", "x:1"), `Sidecar.Upstream "x" SPIFFE ID is required`},
		{"host not a host", up("x", id, "api_-.:1"), `Sidecar.Upstream "x" address "api_-.:1": "api_-." is not a host name`},
		{"host with a slash", up("x", id, "a/b:1"), `only letters, digits`},
		{"label starts with -", up("x", id, "-a:1"), `starts or ends with '-'`},
		{"long label", up("x", id, strings.Repeat("a", 64)+":1"), "label of 64 bytes"},
		{"mistyped IP", up("x", id, "10.0.0.300:1"), `"10.0.0.300" is neither an IP address nor a host name`},
		{"no port", up("x", id, "api"), `Sidecar.Upstream "x" address "api" is not HOST:PORT`},
		{"port 0", up("x", id, "api:0"), "port must be 1-65535"},
		{"port too big", up("x", id, "api:65536"), "port must be 1-65535"},
		{"port not a number", up("x", id, "api:https"), "port must be 1-65535"},
		{"bad dns type", func(s *envoy.Sidecar) { s.DNS = "round-robin" }, `Sidecar.DNS "round-robin": want strict or logical`},
		{"app host not a host", func(s *envoy.Sidecar) { s.Inbound.AppAddr = "app..local:80" }, `Sidecar.Inbound.AppAddr "app..local:80": "app..local" is not a host name: empty label`},
		{"listener on a name", func(s *envoy.Sidecar) { s.Outbound.ListenAddr = "localhost:15001" }, "Sidecar.Outbound.ListenAddr \"localhost:15001\": host must be an IP address"},
		{"half a catch-all", func(s *envoy.Sidecar) { s.Outbound.PeerAddr = "legacy:1" }, "Sidecar.Outbound.PeerSPIFFEID is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := compose()
			tt.modify(&s)
			out, err := s.Render()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Render = %v, want an error saying %q\n%s", err, tt.want, out)
			}
		})
	}
}

// TestEnvoyValidatesTopologies runs the real Envoy in validate mode on
// every shape of the bootstraps a real topology needs: upstreams by name
// (STRICT_DNS, LOGICAL_DNS), several of them, meshid's authz and the app by
// name, and each validation context name.
func TestEnvoyValidatesTopologies(t *testing.T) {
	if _, err := harness.EnvoyPath(); err != nil {
		t.Skipf("%v; `make test` installs it", err)
	}
	tests := map[string]func(*envoy.Sidecar){
		"compose: two upstreams, one by name, authz by name": func(*envoy.Sidecar) {},
		"logical DNS": func(s *envoy.Sidecar) { s.DNS = envoy.DNSLogical },
		"outbound only, three upstreams and a catch-all by name": func(s *envoy.Sidecar) {
			s.Inbound = nil
			s.Outbound.Upstreams = append(s.Outbound.Upstreams, envoy.Upstream{Name: "cache.mesh.internal", SPIFFEID: "spiffe://example.org/cache", Addr: "cache.mesh.internal:6380"})
			s.Outbound.PeerAddr, s.Outbound.PeerSPIFFEID = "legacy:8443", "spiffe://example.org/legacy"
		},
		"single peer by name": func(s *envoy.Sidecar) {
			s.Outbound = &envoy.Outbound{ListenAddr: "127.0.0.1:15001", PeerAddr: "backend:8443", PeerSPIFFEID: "spiffe://example.org/backend"}
		},
		"app by name":             func(s *envoy.Sidecar) { s.Inbound.AppAddr = "app:8080" },
		"authz over HTTP by name": func(s *envoy.Sidecar) { s.Inbound.AuthzHTTP = true; s.Inbound.AuthzAddr = "meshid:9192" },
		"authz over mTLS by name": func(s *envoy.Sidecar) {
			s.Inbound.AuthzSPIFFEID = "spiffe://example.org/meshid/authz"
		},
		"validation ALL":           func(s *envoy.Sidecar) { s.ValidationName = "ALL" },
		"validation ROOTCA":        func(s *envoy.Sidecar) { s.ValidationName = "ROOTCA" },
		"validation trust domain":  func(s *envoy.Sidecar) { s.ValidationName = "spiffe://partner.example" },
		"delta SDS with upstreams": func(s *envoy.Sidecar) { s.DeltaSDS = true },
	}
	for name, modify := range tests {
		t.Run(name, func(t *testing.T) {
			s := compose()
			modify(&s)
			out, err := s.Render()
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "envoy.yaml")
			if err := os.WriteFile(path, out, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := harness.EnvoyValidate(t.Context(), path); err != nil {
				t.Errorf("%v\nconfig:\n%s", err, out)
			}
		})
	}
}
