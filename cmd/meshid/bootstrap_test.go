package main

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEnvoyBootstrapCommand(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    []string // in the bootstrap
		wantErr string
	}{
		{
			name: "inbound sidecar, trust domain from the SPIFFE ID",
			args: []string{"-spiffe-id", "spiffe://corp.example/ns/a/sa/api", "-inbound", "127.0.0.1:8443", "-app", "127.0.0.1:8080", "-socket", "/run/meshid.sock"},
			want: []string{`"spiffe://corp.example/ns/a/sa/api"`, `"spiffe://corp.example"`, `"/run/meshid.sock"`, "port_value: 8443", "port_value: 8080", "ext_authz", "grpc_service:", "port_value: 9191", "api_type: GRPC,"},
		},
		{
			name: "inbound sidecar asking meshid over HTTP",
			args: []string{"-spiffe-id", "spiffe://example.org/api", "-inbound", "127.0.0.1:8443", "-app", "127.0.0.1:8080", "-authz", "127.0.0.1:9192", "-authz-http"},
			want: []string{"http_service:", `uri: "http://127.0.0.1:9192"`, "port_value: 9192", `path_prefix: ""`, "allowed_upstream_headers"},
		},
		{
			name: "inbound sidecar asking meshid over mTLS",
			args: []string{"-spiffe-id", "spiffe://example.org/api", "-inbound", "127.0.0.1:8443", "-app", "127.0.0.1:8080", "-authz", "10.0.0.5:9191", "-authz-tls-id", "spiffe://example.org/meshid/authz"},
			want: []string{"grpc_service:", `address: "10.0.0.5"`, "UpstreamTlsContext", `exact: "spiffe://example.org/meshid/authz"`},
		},
		{
			name: "inbound sidecar sending bodies to meshid",
			args: []string{"-spiffe-id", "spiffe://example.org/api", "-inbound", "127.0.0.1:8443", "-app", "127.0.0.1:8080", "-authz-body", "8192"},
			want: []string{"with_request_body: {max_request_bytes: 8192, allow_partial_message: true, pack_as_bytes: true}"},
		},
		{
			name:    "a body limit that is not a size",
			args:    []string{"-spiffe-id", "spiffe://example.org/api", "-inbound", "127.0.0.1:8443", "-app", "127.0.0.1:8080", "-authz-body", "8k"},
			wantErr: "want a positive number of bytes",
		},
		{
			name: "outbound sidecar pins the peer",
			args: []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001", "-peer", "127.0.0.1:8443", "-peer-id", "spiffe://example.org/api"},
			want: []string{"match_typed_subject_alt_names", `exact: "spiffe://example.org/api"`, "port_value: 15001"},
		},
		{
			name: "delta SDS",
			args: []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001", "-peer", "127.0.0.1:8443", "-peer-id", "spiffe://example.org/api", "-delta"},
			want: []string{"api_type: DELTA_GRPC"},
		},
		{
			name: "compose sidecar: upstreams by name, authz by name",
			args: []string{"-spiffe-id", "spiffe://example.org/compose/web", "-inbound", "0.0.0.0:8443", "-app", "127.0.0.1:8080", "-authz", "meshid:9191",
				"-outbound", "127.0.0.1:15001", "-upstream", "api=spiffe://example.org/compose/api@api:8443", "-upstream", "db=spiffe://example.org/compose/db@10.0.0.7:8443"},
			want: []string{`name: "upstream_api"`, "type: STRICT_DNS", `address: "api"`, `exact: "spiffe://example.org/compose/api"`,
				`name: "upstream_db"`, `address: "10.0.0.7"`, `domains: ["db"]`, `address: "meshid"`, "strip_any_host_port: true"},
		},
		{
			name: "logical DNS and a validation name",
			args: []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001", "-peer", "backend:8443", "-peer-id", "spiffe://example.org/api", "-dns", "logical", "-validation", "ALL"},
			want: []string{"type: LOGICAL_DNS", `address: "backend"`, `name: "ALL"`, `domains: ["*"]`},
		},
		{
			name: "ROOTCA",
			args: []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001", "-peer", "127.0.0.1:8443", "-peer-id", "spiffe://example.org/api", "-validation", "ROOTCA"},
			want: []string{`name: "ROOTCA"`},
		},
		{
			name: "a federated trust domain's bundle",
			args: []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001", "-peer", "127.0.0.1:8443", "-peer-id", "spiffe://partner.example/api", "-validation", "spiffe://partner.example"},
			want: []string{`name: "spiffe://partner.example"`},
		},
		{
			name:    "an upstream that is not NAME=ID@HOST:PORT",
			args:    []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001", "-upstream", "api@api:8443"},
			wantErr: `invalid argument "api@api:8443" for "--upstream" flag: want NAME=SPIFFE_ID@HOST:PORT`,
		},
		{
			name:    "an upstream's host that is not a host name",
			args:    []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001", "-upstream", "api=spiffe://example.org/api@api!:8443"},
			wantErr: `-upstream "api" address "api!:8443": "api!" is not a host name`,
		},
		{
			name:    "an upstream's bad SPIFFE ID",
			args:    []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001", "-upstream", "api=spiffe://example.org/a//b@api:8443"},
			wantErr: `-upstream "api" SPIFFE ID "spiffe://example.org/a//b" is not a SPIFFE ID`,
		},
		{
			name:    "an upstream's bad port",
			args:    []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001", "-upstream", "api=spiffe://example.org/api@api:99999"},
			wantErr: `-upstream "api" address "api:99999": port must be 1-65535`,
		},
		{
			name: "a name given twice",
			args: []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001",
				"-upstream", "api=spiffe://example.org/api@api:8443", "-upstream", "api=spiffe://example.org/api2@api2:8443"},
			wantErr: `-upstream "api" is given twice`,
		},
		{
			name:    "upstreams without -outbound",
			args:    []string{"-spiffe-id", "spiffe://example.org/web", "-upstream", "api=spiffe://example.org/api@api:8443"},
			wantErr: "-outbound is required",
		},
		{
			name:    "a DNS type Envoy does not have",
			args:    []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001", "-peer", "b:1", "-peer-id", "spiffe://example.org/b", "-dns", "round-robin"},
			wantErr: `invalid argument "round-robin" for "--dns" flag: want strict or logical`,
		},
		{
			name:    "a validation name meshid does not serve",
			args:    []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001", "-peer", "b:1", "-peer-id", "spiffe://example.org/b", "-validation", "example.org"},
			wantErr: `-validation "example.org": want ALL, ROOTCA or a trust domain ID`,
		},
		{
			name:    "neither side",
			args:    []string{"-spiffe-id", "spiffe://example.org/web"},
			wantErr: "envoy bootstrap: neither -inbound nor -outbound is set",
		},
		{
			name:    "half an outbound",
			args:    []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001"},
			wantErr: "envoy bootstrap: -peer is required",
		},
		{
			name:    "HTTP ext_authz without an inbound listener",
			args:    []string{"-spiffe-id", "spiffe://example.org/web", "-outbound", "127.0.0.1:15001", "-peer", "127.0.0.1:8443", "-peer-id", "spiffe://example.org/api", "-authz-http"},
			wantErr: "-authz-http, -authz-body and -authz-tls-id configure the inbound listener",
		},
		{
			name:    "errors name flags",
			args:    []string{"-spiffe-id", "web", "-inbound", "127.0.0.1:8443", "-app", "localhost:8080", "-authz-tls-id", "meshid", "-socket", "agent.sock"},
			wantErr: "-spiffe-id \"web\" is not a SPIFFE ID",
		},
		{
			name:    "stray argument",
			args:    []string{"-spiffe-id", "spiffe://example.org/web", "extra"},
			wantErr: `unexpected argument "extra"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			outFile := filepath.Join(t.TempDir(), "envoy.yaml")
			err := dispatch(context.Background(), append([]string{"envoy", "bootstrap"}, tt.args...), &stdout, &stderr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				// Refused before anything is written.
				err := dispatch(context.Background(), append([]string{"envoy", "bootstrap", "-o", outFile}, tt.args...), &stdout, &stderr)
				if _, statErr := os.Stat(outFile); err == nil || !errors.Is(statErr, fs.ErrNotExist) || stdout.Len() != 0 {
					t.Fatalf("a refused bootstrap was written (err %v, stat %v, stdout %q)", err, statErr, stdout.String())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("bootstrap lacks %q:\n%s", w, stdout.String())
				}
			}
		})
	}
}
