package envoy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

func inbound() *envoy.Inbound {
	return &envoy.Inbound{ListenAddr: "127.0.0.1:10001", AppAddr: "127.0.0.1:10002", AuthzAddr: "127.0.0.1:10003"}
}

func outbound() *envoy.Outbound {
	return &envoy.Outbound{ListenAddr: "127.0.0.1:10004", PeerAddr: "127.0.0.1:10005", PeerSPIFFEID: "spiffe://example.org/ns/demo/sa/backend"}
}

func valid() envoy.Sidecar {
	return envoy.Sidecar{
		Node:        "frontend",
		AdminAddr:   "127.0.0.1:9901",
		SDSSocket:   "/tmp/meshid/agent.sock",
		SPIFFEID:    "spiffe://example.org/ns/demo/sa/frontend",
		TrustDomain: "example.org",
		Inbound:     inbound(),
		Outbound:    outbound(),
	}
}

func TestRenderRejects(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*envoy.Sidecar)
		want   []string // every one must appear in the error
	}{
		{"no admin", func(s *envoy.Sidecar) { s.AdminAddr = "" }, []string{"Sidecar.AdminAddr is required"}},
		{"admin host name", func(s *envoy.Sidecar) { s.AdminAddr = "localhost:9901" }, []string{"Sidecar.AdminAddr", "must be an IP address"}},
		{"admin no port", func(s *envoy.Sidecar) { s.AdminAddr = "127.0.0.1" }, []string{"Sidecar.AdminAddr", "not IP:PORT"}},
		{"admin port 0", func(s *envoy.Sidecar) { s.AdminAddr = "127.0.0.1:0" }, []string{"Sidecar.AdminAddr", "1-65535"}},
		{"no socket", func(s *envoy.Sidecar) { s.SDSSocket = "" }, []string{"Sidecar.SDSSocket is required"}},
		{"relative socket", func(s *envoy.Sidecar) { s.SDSSocket = "agent.sock" }, []string{"Sidecar.SDSSocket", "absolute"}},
		{"no SPIFFE ID", func(s *envoy.Sidecar) { s.SPIFFEID = "" }, []string{"Sidecar.SPIFFEID is required"}},
		{"bad SPIFFE ID", func(s *envoy.Sidecar) { s.SPIFFEID = "https://example.org/x" }, []string{"Sidecar.SPIFFEID", "not a SPIFFE ID"}},
		{"no trust domain", func(s *envoy.Sidecar) { s.TrustDomain = "" }, []string{"Sidecar.TrustDomain is required"}},
		{"bad trust domain", func(s *envoy.Sidecar) { s.TrustDomain = "Example Org" }, []string{"Sidecar.TrustDomain"}},
		{"bad validation name", func(s *envoy.Sidecar) { s.ValidationName = "everything" }, []string{`Sidecar.ValidationName "everything": want ALL, ROOTCA or a trust domain ID`}},
		{"no listener", func(s *envoy.Sidecar) { s.Inbound, s.Outbound = nil, nil }, []string{"Sidecar.Inbound and Sidecar.Outbound are both nil"}},
		{"no app", func(s *envoy.Sidecar) { s.Inbound.AppAddr = "" }, []string{"Sidecar.Inbound.AppAddr is required"}},
		{"no authz", func(s *envoy.Sidecar) { s.Inbound.AuthzAddr = "" }, []string{"Sidecar.Inbound.AuthzAddr is required"}},
		{"relative authz socket", func(s *envoy.Sidecar) { s.Inbound.AuthzAddr = "unix://authz.sock" }, []string{"Sidecar.Inbound.AuthzAddr", "absolute"}},
		{"no inbound listen", func(s *envoy.Sidecar) { s.Inbound.ListenAddr = "" }, []string{"Sidecar.Inbound.ListenAddr is required"}},
		{"no outbound listen", func(s *envoy.Sidecar) { s.Outbound.ListenAddr = "" }, []string{"Sidecar.Outbound.ListenAddr is required"}},
		{"no peer", func(s *envoy.Sidecar) { s.Outbound.PeerAddr = "" }, []string{"Sidecar.Outbound.PeerAddr is required"}},
		{"no peer ID", func(s *envoy.Sidecar) { s.Outbound.PeerSPIFFEID = "" }, []string{"Sidecar.Outbound.PeerSPIFFEID is required"}},
		{
			"every problem at once",
			func(s *envoy.Sidecar) { *s = envoy.Sidecar{Outbound: &envoy.Outbound{}} },
			[]string{"AdminAddr", "SDSSocket", "SPIFFEID", "TrustDomain", "Outbound.ListenAddr", "Outbound.PeerAddr", "Outbound.PeerSPIFFEID"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := valid()
			tt.modify(&s)
			out, err := s.Render()
			if err == nil {
				t.Fatalf("Render succeeded:\n%s", out)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not mention %q:\n%v", want, err)
				}
			}
		})
	}
}

// TestRenderContent checks the parts of the bootstrap meshid depends on, by
// walking the parsed YAML rather than matching text.
func TestRenderContent(t *testing.T) {
	s := valid()
	s.Inbound.AuthzAddr = "unix:///run/meshid/authz.sock"
	doc := render(t, s)

	if got := lookup(t, doc, "node.id"); got != "frontend" {
		t.Errorf("node.id = %v", got)
	}
	if got := lookup(t, doc, "admin.address.socket_address.port_value"); got != 9901 {
		t.Errorf("admin port = %v", got)
	}

	clusters := byName(t, lookup(t, doc, "static_resources.clusters"))
	if got := lookup(t, clusters["meshid_sds"], "load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.pipe.path"); got != "/tmp/meshid/agent.sock" {
		t.Errorf("meshid_sds pipe = %v", got)
	}
	for _, name := range []string{"meshid_sds", "meshid_authz"} {
		if got := lookup(t, clusters[name], "typed_extension_protocol_options.envoy\\.extensions\\.upstreams\\.http\\.v3\\.HttpProtocolOptions.explicit_http_config"); got == nil {
			t.Errorf("cluster %s is not HTTP/2: %v", name, got)
		}
	}
	if got := lookup(t, clusters["meshid_authz"], "load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.pipe.path"); got != "/run/meshid/authz.sock" {
		t.Errorf("meshid_authz pipe = %v", got)
	}
	if got := lookup(t, clusters["local_app"], "load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.socket_address.port_value"); got != 10002 {
		t.Errorf("local_app port = %v", got)
	}

	listeners := byName(t, lookup(t, doc, "static_resources.listeners"))
	in := lookup(t, listeners["inbound"], "filter_chains.0").(map[string]any)
	tls := lookup(t, in, "transport_socket.typed_config")
	if got := lookup(t, tls, "require_client_certificate"); got != true {
		t.Errorf("inbound require_client_certificate = %v", got)
	}
	checkSDS(t, "inbound cert", lookup(t, tls, "common_tls_context.tls_certificate_sds_secret_configs.0"), s.SPIFFEID)
	checkSDS(t, "inbound bundle", lookup(t, tls, "common_tls_context.validation_context_sds_secret_config"), "spiffe://example.org")
	hcm := lookup(t, in, "filters.0.typed_config")
	if got := lookup(t, hcm, "forward_client_cert_details"); got != "SANITIZE_SET" {
		t.Errorf("forward_client_cert_details = %v", got)
	}
	if got := lookup(t, hcm, "set_current_client_cert_details.uri"); got != true {
		t.Errorf("set_current_client_cert_details.uri = %v", got)
	}
	filters := lookup(t, hcm, "http_filters").([]any)
	if len(filters) != 2 || lookup(t, filters[0], "name") != "envoy.filters.http.ext_authz" || lookup(t, filters[1], "name") != "envoy.filters.http.router" {
		t.Fatalf("inbound http_filters = %v, want ext_authz then router", filters)
	}
	authz := lookup(t, filters[0], "typed_config")
	for path, want := range map[string]any{
		"failure_mode_allow":                   false,
		"transport_api_version":                "V3",
		"grpc_service.envoy_grpc.cluster_name": "meshid_authz",
	} {
		if got := lookup(t, authz, path); got != want {
			t.Errorf("ext_authz %s = %v, want %v", path, got, want)
		}
	}

	peerTLS := lookup(t, clusters["peer"], "transport_socket.typed_config.common_tls_context")
	checkSDS(t, "outbound cert", lookup(t, peerTLS, "tls_certificate_sds_secret_configs.0"), s.SPIFFEID)
	checkSDS(t, "outbound bundle", lookup(t, peerTLS, "combined_validation_context.validation_context_sds_secret_config"), "spiffe://example.org")
	san := lookup(t, peerTLS, "combined_validation_context.default_validation_context.match_typed_subject_alt_names.0")
	if lookup(t, san, "san_type") != "URI" || lookup(t, san, "matcher.exact") != s.Outbound.PeerSPIFFEID {
		t.Errorf("outbound SAN matcher = %v, want URI exact %s", san, s.Outbound.PeerSPIFFEID)
	}
}

// TestRenderAuthzHTTP checks the HTTP ext_authz filter against what
// meshid's HTTP handler needs: every request header including the XFCC the
// listener sets, the path unchanged, the policy's headers passed on, and
// an HTTP/1.1 cluster (meshid's HTTP server does not speak h2c).
func TestRenderAuthzHTTP(t *testing.T) {
	s := valid()
	s.Inbound.AuthzHTTP = true
	doc := render(t, s)

	listeners := byName(t, lookup(t, doc, "static_resources.listeners"))
	hcm := lookup(t, listeners["inbound"], "filter_chains.0.filters.0.typed_config")
	authz := lookup(t, hcm, "http_filters.0.typed_config").(map[string]any)
	if _, ok := authz["grpc_service"]; ok {
		t.Errorf("ext_authz has a grpc_service beside http_service: %v", authz)
	}
	for path, want := range map[string]any{
		"failure_mode_allow":                          false,
		"http_service.server_uri.cluster":             "meshid_authz",
		"http_service.server_uri.uri":                 "http://127.0.0.1:10003",
		"http_service.server_uri.timeout":             "1s",
		"http_service.path_prefix":                    "",
		"allowed_headers.patterns.0.safe_regex.regex": ".*",
		"http_service.authorization_response.allowed_upstream_headers.patterns.0.prefix":          "x-",
		"http_service.authorization_response.allowed_client_headers_on_success.patterns.0.prefix": "x-",
	} {
		if got := lookup(t, authz, path); got != want {
			t.Errorf("ext_authz %s = %v, want %v", path, got, want)
		}
	}
	// Unset, Envoy passes every header of a deny to the client; set, only
	// those it names.
	if _, ok := lookup(t, authz, "http_service.authorization_response").(map[string]any)["allowed_client_headers"]; ok {
		t.Error("allowed_client_headers is set; a deny would lose the policy's headers")
	}
	var disallowed []string
	for _, p := range lookup(t, authz, "disallowed_headers.patterns").([]any) {
		disallowed = append(disallowed, lookup(t, p, "exact").(string))
	}
	for _, h := range disallowed {
		if h == "x-forwarded-client-cert" || h == "authorization" {
			t.Errorf("disallowed_headers holds %s, which policies read", h)
		}
	}

	clusters := byName(t, lookup(t, doc, "static_resources.clusters"))
	if _, ok := clusters["meshid_authz"].(map[string]any)["typed_extension_protocol_options"]; ok {
		t.Error("meshid_authz is HTTP/2; meshid's HTTP ext_authz server speaks HTTP/1.1")
	}
	if got := lookup(t, clusters["meshid_authz"], "load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.socket_address.port_value"); got != 10003 {
		t.Errorf("meshid_authz port = %v", got)
	}

	s.Inbound.AuthzAddr = "unix:///run/meshid/authz-http.sock"
	clusters = byName(t, lookup(t, render(t, s), "static_resources.clusters"))
	if got := lookup(t, clusters["meshid_authz"], "load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.pipe.path"); got != "/run/meshid/authz-http.sock" {
		t.Errorf("meshid_authz pipe = %v", got)
	}
}

// TestRenderAuthzTLS: with meshid's authz ID, the authz cluster is mTLS
// with the sidecar's own SVID and accepts that one server ID; without it,
// plaintext.
func TestRenderAuthzTLS(t *testing.T) {
	s := valid()
	clusters := byName(t, lookup(t, render(t, s), "static_resources.clusters"))
	if ts, ok := clusters["meshid_authz"].(map[string]any)["transport_socket"]; ok {
		t.Errorf("plaintext authz cluster has a transport socket: %v", ts)
	}

	s.Inbound.AuthzSPIFFEID = "spiffe://example.org/meshid/authz"
	clusters = byName(t, lookup(t, render(t, s), "static_resources.clusters"))
	tls := lookup(t, clusters["meshid_authz"], "transport_socket.typed_config.common_tls_context")
	checkSDS(t, "authz cert", lookup(t, tls, "tls_certificate_sds_secret_configs.0"), s.SPIFFEID)
	checkSDS(t, "authz bundle", lookup(t, tls, "combined_validation_context.validation_context_sds_secret_config"), "spiffe://example.org")
	san := lookup(t, tls, "combined_validation_context.default_validation_context.match_typed_subject_alt_names.0")
	if lookup(t, san, "san_type") != "URI" || lookup(t, san, "matcher.exact") != s.Inbound.AuthzSPIFFEID {
		t.Errorf("authz SAN matcher = %v, want URI exact %s", san, s.Inbound.AuthzSPIFFEID)
	}
	// The peer cluster keeps its own server ID.
	peerSAN := lookup(t, clusters["peer"], "transport_socket.typed_config.common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names.0.matcher.exact")
	if peerSAN != s.Outbound.PeerSPIFFEID {
		t.Errorf("peer SAN = %v, want %s", peerSAN, s.Outbound.PeerSPIFFEID)
	}

	s.Inbound.AuthzSPIFFEID = "meshid"
	if _, err := s.Render(); err == nil || !strings.Contains(err.Error(), "Sidecar.Inbound.AuthzSPIFFEID") {
		t.Errorf("Render with a bad authz ID: %v", err)
	}
}

// TestRenderAuthzBody: bodies go to meshid only when asked for, as bytes,
// cut at the limit and marked so.
func TestRenderAuthzBody(t *testing.T) {
	extAuthz := func(s envoy.Sidecar) any {
		listeners := byName(t, lookup(t, render(t, s), "static_resources.listeners"))
		return lookup(t, listeners["inbound"], "filter_chains.0.filters.0.typed_config.http_filters.0.typed_config")
	}
	s := valid()
	if body, ok := extAuthz(s).(map[string]any)["with_request_body"]; ok {
		t.Errorf("with_request_body set by default: %v", body)
	}
	s.Inbound.AuthzBodyBytes = 4096
	body := lookup(t, extAuthz(s), "with_request_body")
	for path, want := range map[string]any{"max_request_bytes": 4096, "allow_partial_message": true, "pack_as_bytes": true} {
		if got := lookup(t, body, path); got != want {
			t.Errorf("with_request_body.%s = %v, want %v", path, got, want)
		}
	}
}

func TestRenderOmitsUnusedSide(t *testing.T) {
	s := valid()
	s.Inbound = nil
	clusters := byName(t, lookup(t, render(t, s), "static_resources.clusters"))
	for _, name := range []string{"meshid_authz", "local_app"} {
		if _, ok := clusters[name]; ok {
			t.Errorf("outbound-only sidecar has cluster %s", name)
		}
	}
}

// TestRenderQuotesValues shows that a hostile value stays one scalar.
func TestRenderQuotesValues(t *testing.T) {
	s := valid()
	s.Node = "evil\"\n  injected: true\n#"
	doc := render(t, s)
	if got := lookup(t, doc, "node.id"); got != s.Node {
		t.Errorf("node.id = %q, want %q", got, s.Node)
	}
}

// TestEnvoyValidates runs the real Envoy in validate mode on rendered
// bootstraps: the check that the template matches Envoy's API.
func TestEnvoyValidates(t *testing.T) {
	if _, err := harness.EnvoyPath(); err != nil {
		t.Skipf("%v; `make test` installs it", err)
	}
	tests := map[string]func(*envoy.Sidecar){
		"inbound only":  func(s *envoy.Sidecar) { s.Outbound = nil },
		"outbound only": func(s *envoy.Sidecar) { s.Inbound = nil },
		"both":          func(*envoy.Sidecar) {},
		"authz on a unix socket": func(s *envoy.Sidecar) {
			s.Outbound = nil
			s.Inbound.AuthzAddr = "unix:///tmp/meshid/authz.sock"
		},
		"authz over HTTP": func(s *envoy.Sidecar) {
			s.Outbound = nil
			s.Inbound.AuthzHTTP = true
		},
		"authz over HTTP on a unix socket": func(s *envoy.Sidecar) {
			s.Inbound.AuthzHTTP = true
			s.Inbound.AuthzAddr = "unix:///tmp/meshid/authz-http.sock"
		},
		"authz over mTLS": func(s *envoy.Sidecar) {
			s.Inbound.AuthzSPIFFEID = "spiffe://example.org/meshid/authz"
		},
		"request bodies to authz": func(s *envoy.Sidecar) {
			s.Inbound.AuthzBodyBytes = 8192
		},
		"request bodies to authz over HTTP": func(s *envoy.Sidecar) {
			s.Inbound.AuthzBodyBytes = 8192
			s.Inbound.AuthzHTTP = true
		},
		"authz over HTTP and mTLS": func(s *envoy.Sidecar) {
			s.Inbound.AuthzHTTP = true
			s.Inbound.AuthzSPIFFEID = "spiffe://example.org/meshid/authz"
			s.DeltaSDS = true
		},
		"delta SDS": func(s *envoy.Sidecar) { s.DeltaSDS = true },
		"ALL":       func(s *envoy.Sidecar) { s.ValidationName = "ALL" },
	}
	for name, modify := range tests {
		t.Run(name, func(t *testing.T) {
			s := valid()
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

// TestEnvoyRejectsBrokenConfig proves TestEnvoyValidates can fail.
func TestEnvoyRejectsBrokenConfig(t *testing.T) {
	bin, err := harness.EnvoyPath()
	if err != nil {
		t.Skipf("%v; `make test` installs it", err)
	}
	out, err := valid().Render()
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(out), "require_client_certificate", "require_client_certificat", 1)
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := exec.CommandContext(t.Context(), bin, "--mode", "validate", "-c", path, "--disable-hot-restart", "-l", "critical").Run(); err == nil {
		t.Error("envoy --mode validate accepted an unknown field")
	}
}

func render(t *testing.T, s envoy.Sidecar) map[string]any {
	t.Helper()
	out, err := s.Render()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("rendered bootstrap is not YAML: %v\n%s", err, out)
	}
	return doc
}

// lookup follows a dotted path ("a.0.b"; "\." is a literal dot) through
// maps and lists.
func lookup(t *testing.T, v any, path string) any {
	t.Helper()
	path = strings.ReplaceAll(path, `\.`, "\x00")
	for _, key := range strings.Split(path, ".") {
		key = strings.ReplaceAll(key, "\x00", ".")
		switch node := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = node[key]; !ok {
				t.Fatalf("no %q in %v (path %s)", key, node, path)
			}
		case []any:
			i := 0
			for _, c := range key {
				i = i*10 + int(c-'0')
			}
			if i >= len(node) {
				t.Fatalf("index %d out of %d (path %s)", i, len(node), path)
			}
			v = node[i]
		default:
			t.Fatalf("cannot follow %q into %T (path %s)", key, v, path)
		}
	}
	return v
}

func byName(t *testing.T, list any) map[string]any {
	t.Helper()
	m := map[string]any{}
	for _, item := range list.([]any) {
		m[lookup(t, item, "name").(string)] = item
	}
	return m
}

func checkSDS(t *testing.T, what string, ref any, wantName string) {
	t.Helper()
	if got := lookup(t, ref, "name"); got != wantName {
		t.Errorf("%s: SDS name = %v, want %s", what, got, wantName)
	}
	for path, want := range map[string]any{
		"sds_config.resource_api_version":                                      "V3",
		"sds_config.api_config_source.api_type":                                "GRPC",
		"sds_config.api_config_source.transport_api_version":                   "V3",
		"sds_config.api_config_source.grpc_services.0.envoy_grpc.cluster_name": "meshid_sds",
	} {
		if got := lookup(t, ref, path); got != want {
			t.Errorf("%s: %s = %v, want %v", what, path, got, want)
		}
	}
}
