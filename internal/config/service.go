package config

import (
	"net/url"
	"time"
)

// Service is a remote HTTP service meshid is a client of: a bundle
// service, a decision-log collector. The same keys as OPA's services,
// named as the rest of meshid.yaml names files (docs/authz.md § Remote
// services).
type Service struct {
	// URL is the service's base URL, http or https.
	URL string `yaml:"url"`
	// CAFile holds the PEM roots the server's certificate must chain to;
	// empty trusts the system's roots.
	CAFile string `yaml:"ca_file"`
	// BearerTokenFile holds a token sent as "Authorization: Bearer ..."
	// with every request; it is read again for each, so a rotated token
	// is used without a restart.
	BearerTokenFile string `yaml:"bearer_token_file"`
	// ClientTLS is a client certificate presented to the server.
	ClientTLS ClientTLS `yaml:"client_tls"`
	// Timeout bounds the wait for a response's headers.
	Timeout time.Duration `yaml:"timeout"`
}

// ClientTLS is a client certificate and its key, PEM files.
type ClientTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// DefaultServiceTimeout is Service.Timeout's default.
const DefaultServiceTimeout = 10 * time.Second

func (s *Service) applyDefaults() {
	if s.Timeout == 0 {
		s.Timeout = DefaultServiceTimeout
	}
}

func (s *Service) paths() []*string {
	return []*string{&s.CAFile, &s.BearerTokenFile, &s.ClientTLS.CertFile, &s.ClientTLS.KeyFile}
}

// validate checks the service at path (its key in meshid.yaml, e.g.
// authz.bundles[0]); name is how messages spell that path.
func (s Service) validate(path []any, name string, bad func(path []any, format string, args ...any)) {
	key := func(k ...any) []any { return append(append([]any{}, path...), k...) }
	u, err := url.Parse(s.URL)
	switch {
	case s.URL == "":
		bad(key("url"), "%s.url is required", name)
		return
	case err != nil:
		bad(key("url"), "%s.url %q: %v", name, s.URL, err)
		return
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		bad(key("url"), "%s.url %q: want an absolute http:// or https:// URL", name, s.URL)
		return
	case u.User != nil:
		bad(key("url"), "%s.url: credentials do not belong in the URL, where logs show them; use %s.bearer_token_file or %s.client_tls", name, name, name)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		// Requests go to url + "/" + the resource, as OPA sends them: a
		// query here would end up in the middle of every path.
		bad(key("url"), "%s.url %q has a query or fragment: want the service's base URL (a query belongs at the end of the resource)", name, s.URL)
	}
	plain := u.Scheme == "http"
	if plain && s.BearerTokenFile != "" {
		bad(key("bearer_token_file"), "%s.bearer_token_file: the token would cross the network in the clear over %s; use https", name, s.URL)
	}
	if plain && s.CAFile != "" {
		bad(key("ca_file"), "%s.ca_file is set but %s is plain http", name, s.URL)
	}
	switch c := s.ClientTLS; {
	case c.CertFile == "" && c.KeyFile == "":
	case c.CertFile == "" || c.KeyFile == "":
		bad(key("client_tls"), "%s.client_tls needs both cert_file and key_file", name)
	case plain:
		bad(key("client_tls"), "%s.client_tls is set but %s is plain http", name, s.URL)
	}
	if s.BearerTokenFile != "" && s.ClientTLS.CertFile != "" {
		// OPA's client takes one credential method per service.
		bad(key("client_tls"), "%s: bearer_token_file and client_tls exclude each other: choose one way to authenticate", name)
	}
	if s.Timeout < 0 {
		bad(key("timeout"), "%s.timeout %s must be positive", name, s.Timeout)
	}
}
