// Package remote turns a config.Service into the REST client OPA's
// bundle downloader and meshid's decision-log shipper send their
// requests with: the service's URL, the roots its certificate must chain
// to, a bearer token read from a file for every request, a client
// certificate, and a response timeout.
package remote

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"

	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins/rest"

	"github.com/meshid/meshid/internal/config"
)

// Client returns a REST client for s, named name in OPA's logs. The files
// s names are checked now, so that a missing token or certificate is a
// start-up error rather than the first request's.
func Client(name string, s config.Service, log *slog.Logger) (rest.Client, error) {
	for _, f := range []struct{ key, path string }{
		{"ca_file", s.CAFile}, {"bearer_token_file", s.BearerTokenFile},
		{"client_tls.cert_file", s.ClientTLS.CertFile}, {"client_tls.key_file", s.ClientTLS.KeyFile},
	} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return rest.Client{}, fmt.Errorf("%s: %s: %w", name, f.key, err)
		}
	}
	raw, err := json.Marshal(restConfig(name, s))
	if err != nil {
		return rest.Client{}, fmt.Errorf("%s: %w", name, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// OPA's client logs at debug what it sends; meshid's own logs say
	// what came of it.
	opaLog := logging.NewLoggerFromSlogHandler(log.With("service", name).Handler(), logging.Warn)
	c, err := rest.New(raw, nil, rest.Name(name), rest.Logger(opaLog))
	if err != nil {
		return rest.Client{}, fmt.Errorf("%s: %w", name, err)
	}
	return c, nil
}

// restConfig is OPA's service configuration for s, in the JSON form
// rest.New reads.
func restConfig(name string, s config.Service) map[string]any {
	c := map[string]any{"name": name, "url": s.URL}
	if s.Timeout > 0 {
		c["response_header_timeout_seconds"] = max(1, int64(s.Timeout.Seconds()))
	}
	if s.CAFile != "" {
		c["tls"] = map[string]any{"ca_cert": s.CAFile}
	}
	creds := map[string]any{}
	if s.BearerTokenFile != "" {
		creds["bearer"] = map[string]any{"token_path": s.BearerTokenFile}
	}
	if s.ClientTLS.CertFile != "" {
		creds["client_tls"] = map[string]any{"cert": s.ClientTLS.CertFile, "private_key": s.ClientTLS.KeyFile}
	}
	if len(creds) > 0 {
		c["credentials"] = creds
	}
	return c
}
