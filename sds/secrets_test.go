package sds

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

const backendID = "spiffe://example.org/backend"

func TestSecretNames(t *testing.T) {
	ca := newTestCA(t)
	x := ca.context(t, frontendID, backendID)
	roots, _ := x.Bundles.Bundles()[0].Marshal()

	isCert := func(wantID string) func(t *testing.T, s *tlsv3.Secret) {
		return func(t *testing.T, s *tlsv3.Secret) {
			c := s.GetTlsCertificate()
			svid, err := x509svid.Parse(c.GetCertificateChain().GetInlineBytes(), c.GetPrivateKey().GetInlineBytes())
			if err != nil || svid.ID.String() != wantID {
				t.Fatalf("tls_certificate holds %v (%v), want %s", svid, err, wantID)
			}
		}
	}
	isRoots := func(t *testing.T, s *tlsv3.Secret) {
		if got := s.GetValidationContext().GetTrustedCa().GetInlineBytes(); string(got) != string(roots) {
			t.Fatalf("trusted_ca = %q, want the bundle", got)
		}
	}
	tests := []struct {
		name    string
		plainCA bool
		check   func(t *testing.T, s *tlsv3.Secret)
		code    codes.Code
	}{
		{name: frontendID, check: isCert(frontendID)},
		{name: backendID, check: isCert(backendID)},
		{name: "default", check: isCert(frontendID)}, // the first identity
		{name: "ROOTCA", check: isRoots},
		{name: "spiffe://example.org", check: isRoots},
		{name: "ALL", check: func(t *testing.T, s *tlsv3.Secret) {
			custom := s.GetValidationContext().GetCustomValidatorConfig()
			if custom.GetName() != "envoy.tls.cert_validator.spiffe" {
				t.Fatalf("ALL validator = %q, want the SPIFFE validator", custom.GetName())
			}
			cfg := &tlsv3.SPIFFECertValidatorConfig{}
			if err := custom.GetTypedConfig().UnmarshalTo(cfg); err != nil {
				t.Fatal(err)
			}
			if len(cfg.TrustDomains) != 1 || cfg.TrustDomains[0].Name != "example.org" || string(cfg.TrustDomains[0].TrustBundle.GetInlineBytes()) != string(roots) {
				t.Fatalf("SPIFFE validator trust domains = %v", cfg.TrustDomains)
			}
		}},
		{name: "ALL", plainCA: true, check: isRoots},
		{name: "spiffe://example.org/someone-else", code: codes.InvalidArgument},
		{name: "spiffe://partner.example", code: codes.InvalidArgument},
		{name: "", code: codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := view{x: x, plainTrustedCA: tt.plainCA}.secret(tt.name)
			if tt.code != codes.OK {
				if status.Code(err) != tt.code || !strings.Contains(err.Error(), `"`+tt.name+`"`) {
					t.Fatalf("err = %v, want %v naming the resource", err, tt.code)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Name != tt.name {
				t.Errorf("secret named %q, want %q", s.Name, tt.name)
			}
			tt.check(t, s)
		})
	}

	t.Run("no identity", func(t *testing.T) {
		if _, err := (view{x: ca.context(t)}).secret("ROOTCA"); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("err = %v, want PermissionDenied", err)
		}
	})
	t.Run("empty names mean every identity and trust domain", func(t *testing.T) {
		got, err := view{x: x}.secrets(nil)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range got {
			names = append(names, s.Name)
		}
		if strings.Join(names, ",") != frontendID+","+backendID+",spiffe://example.org" {
			t.Fatalf("names = %v", names)
		}
	})
}

func TestNodeMetadataOnlyChangesTheEncodingOfALL(t *testing.T) {
	for _, tc := range []struct {
		meta map[string]any
		want bool
	}{
		{nil, false},
		{map[string]any{"disable_spiffe_cert_validation": true}, true},
		{map[string]any{"disable_spiffe_cert_validation": "true"}, true},
		{map[string]any{"disable_spiffe_cert_validation": false}, false},
		{map[string]any{"disable_spiffe_cert_validation": 1.0}, false},
	} {
		meta, _ := structpb.NewStruct(tc.meta)
		if got := wantsPlainTrustedCA(&corev3.Node{Metadata: meta}); got != tc.want {
			t.Errorf("metadata %v: plain trusted_ca = %v, want %v", tc.meta, got, tc.want)
		}
	}
}
