package authz

import (
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshid/meshid/test/authztest"
)

// TestRequestKeyCoversEveryField: appendRequestKey encodes each field of
// the messages it walks by hand; a field the API gains must be added to
// it (and here), or requests differing in it would share a decision.
func TestRequestKeyCoversEveryField(t *testing.T) {
	want := map[protoreflect.Message][]string{
		(&authv3.CheckRequest{}).ProtoReflect():                 {"attributes"},
		(&authv3.AttributeContext{}).ProtoReflect():             {"context_extensions", "destination", "metadata_context", "request", "route_metadata_context", "source", "tls_session"},
		(&authv3.AttributeContext_Peer{}).ProtoReflect():        {"address", "certificate", "labels", "principal", "service"},
		(&authv3.AttributeContext_Request{}).ProtoReflect():     {"http", "time"},
		(&authv3.AttributeContext_HttpRequest{}).ProtoReflect(): {"body", "fragment", "header_map", "headers", "host", "id", "method", "path", "protocol", "query", "raw_body", "scheme", "size"},
		(&authv3.AttributeContext_TLSSession{}).ProtoReflect():  {"sni"},
		(&corev3.Address{}).ProtoReflect():                      {"envoy_internal_address", "pipe", "socket_address"},
		(&corev3.SocketAddress{}).ProtoReflect():                {"address", "ipv4_compat", "named_port", "network_namespace_filepath", "port_value", "protocol", "resolver_name"},
		(&corev3.Metadata{}).ProtoReflect():                     {"filter_metadata", "typed_filter_metadata"},
	}
	for m, names := range want {
		var got []string
		fields := m.Descriptor().Fields()
		for i := range fields.Len() {
			got = append(got, string(fields.Get(i).Name()))
		}
		slices.Sort(got)
		if !slices.Equal(got, names) {
			t.Errorf("%s has fields %q; the request key encodes %q", m.Descriptor().FullName(), got, names)
		}
	}
}

// TestRequestKey: requests that differ only in what is left out share a
// key; any other difference, or a left-out field the policy reads, makes
// another key; a left-out field the input could not hold makes none.
func TestRequestKey(t *testing.T) {
	none := volatileFor([][]string{{"parsed_path"}})
	readsID := volatileFor([][]string{{"attributes", "request", "http", "id"}, {"attributes", "request", "http", "headers", "x-request-id"}})
	key := func(v volatile, change func(*authv3.CheckRequest)) (string, bool) {
		req := authztest.DemoCheck("/hello")
		if change != nil {
			change(req)
		}
		before := proto.Clone(req)
		k, ok := appendRequestKey(nil, req, v)
		if !proto.Equal(req, before) {
			t.Fatal("appendRequestKey changed the request")
		}
		return string(k), ok
	}
	base, _ := key(none, nil)
	otherID := func(r *authv3.CheckRequest) {
		r.Attributes.Request.Http.Id = "2"
		r.Attributes.Request.Http.Headers["x-request-id"] = "other"
		r.Attributes.Request.Http.Headers["traceparent"] = "00-ab-01"
		r.Attributes.Request.Time.Seconds++
	}
	if k, ok := key(none, otherID); !ok || k != base {
		t.Error("requests differing only in ids, trace headers and time have different keys")
	}
	readBase, _ := key(readsID, nil)
	if k, _ := key(readsID, otherID); k == readBase {
		t.Error("a request id the policy reads is left out of the key")
	}
	for name, change := range map[string]func(*authv3.CheckRequest){
		"method":       func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Method = "POST" },
		"a header":     func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Headers["accept"] = "text/html" },
		"a new header": func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Headers["x-a"] = "" },
		"principal":    func(r *authv3.CheckRequest) { r.Attributes.Source.Principal += "x" },
		"no source":    func(r *authv3.CheckRequest) { r.Attributes.Source = nil },
		"address":      func(r *authv3.CheckRequest) { r.Attributes.Source.Address = authztest.SocketAddress("10.0.0.9", 1) },
		"a string move": func(r *authv3.CheckRequest) {
			r.Attributes.Request.Http.Host, r.Attributes.Request.Http.Scheme = "backend:8443h", "ttps"
		},
		"body":       func(r *authv3.CheckRequest) { r.Attributes.Request.Http.RawBody = []byte{0} },
		"size":       func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Size = 1 },
		"extensions": func(r *authv3.CheckRequest) { r.Attributes.ContextExtensions = map[string]string{"a": "b"} },
		"tls":        func(r *authv3.CheckRequest) { r.Attributes.TlsSession = &authv3.AttributeContext_TLSSession{} },
		"port":       func(r *authv3.CheckRequest) { r.Attributes.Source.Address = authztest.SocketAddress("10.0.0.7", 40113) },
		"protocol": func(r *authv3.CheckRequest) {
			r.Attributes.Source.Address.GetSocketAddress().Protocol = corev3.SocketAddress_UDP
		},
		"a pipe": func(r *authv3.CheckRequest) {
			r.Attributes.Source.Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/p"}}}
		},
		"metadata": func(r *authv3.CheckRequest) { r.Attributes.MetadataContext = nil },
	} {
		if k, ok := key(none, change); !ok || k == base {
			t.Errorf("%s: the same key (ok %v)", name, ok)
		}
	}
	for name, change := range map[string]func(*authv3.CheckRequest){
		"bad request id": func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Id = "\xff" },
		"bad trace":      func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Headers["traceparent"] = "\xff" },
		"bad time":       func(r *authv3.CheckRequest) { r.Attributes.Request.Time.Nanos = -1 },
	} {
		if _, ok := key(none, change); ok {
			t.Errorf("%s: a key, though the input could not be built", name)
		}
	}
}
