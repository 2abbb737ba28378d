package config

import (
	"fmt"
	"strings"
	"testing"
)

func TestServiceValidate(t *testing.T) {
	for _, tc := range []struct {
		s    Service
		want string // "" for valid
	}{
		{Service{URL: "https://bundles.example:8443"}, ""},
		{Service{URL: "http://127.0.0.1:8080"}, ""},
		{Service{URL: "https://b.example", BearerTokenFile: "/t"}, ""},
		{Service{URL: "https://b.example", ClientTLS: ClientTLS{CertFile: "/c", KeyFile: "/k"}, CAFile: "/ca"}, ""},
		{Service{}, "x.url is required"},
		{Service{URL: "bundles.example"}, "want an absolute http:// or https:// URL"},
		{Service{URL: "ftp://b.example"}, "want an absolute http:// or https:// URL"},
		{Service{URL: "https://u:p@b.example"}, "credentials do not belong in the URL"},
		{Service{URL: "https://b.example/v1?token=x"}, `has a query or fragment: want the service's base URL`},
		{Service{URL: "https://b.example/v1#top"}, `has a query or fragment`},
		{Service{URL: "https://b.example/v1/"}, ""},
		{Service{URL: "http://b.example", BearerTokenFile: "/t"}, "in the clear"},
		{Service{URL: "http://b.example", CAFile: "/ca"}, "plain http"},
		{Service{URL: "https://b.example", ClientTLS: ClientTLS{CertFile: "/c"}}, "needs both cert_file and key_file"},
		{Service{URL: "https://b.example", BearerTokenFile: "/t", ClientTLS: ClientTLS{CertFile: "/c", KeyFile: "/k"}}, "exclude each other"},
	} {
		var errs []string
		tc.s.validate(at("x"), "x", func(_ []any, format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) })
		got := strings.Join(errs, "; ")
		if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%+v: errors %q, want %q", tc.s, got, tc.want)
		}
	}
}
