// Package remote turns a config.Service into the REST client OPA's
// bundle downloader and meshid's decision-log shipper send their
// requests with: the service's URL, the roots its certificate must chain
// to, a bearer token read from a file for every request, a client
// certificate, and a response timeout.
package remote

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"os"

	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/plugins/rest"

	"github.com/meshid/meshid/internal/config"
)

// Client returns a REST client for s, named name in OPA's logs. The files
// s names are read now, so that a missing or unreadable token, roots that
// are no certificates, or a client certificate that does not load are a
// start-up error naming the key, rather than every request's.
func Client(name string, s config.Service, log *slog.Logger) (rest.Client, error) {
	if err := checkFiles(s); err != nil {
		return rest.Client{}, fmt.Errorf("%s: %w", name, err)
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

// checkFiles reads the files s names as OPA's client will.
func checkFiles(s config.Service) error {
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return fmt.Errorf("ca_file: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("ca_file %s holds no PEM certificate", s.CAFile)
		}
	}
	if s.BearerTokenFile != "" {
		// Read again for every request; it must be readable from the start.
		if _, err := os.ReadFile(s.BearerTokenFile); err != nil {
			return fmt.Errorf("bearer_token_file: %w", err)
		}
	}
	if c := s.ClientTLS; c.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
			return fmt.Errorf("client_tls (cert_file %s, key_file %s): %w", c.CertFile, c.KeyFile, err)
		}
	}
	return nil
}

// restConfig is OPA's service configuration for s, in the JSON form
// rest.New reads.
func restConfig(name string, s config.Service) map[string]any {
	c := map[string]any{"name": name, "url": s.URL}
	if s.Timeout > 0 {
		// OPA counts whole seconds: a fraction is rounded up, never to 0
		// (which would be no timeout at all).
		c["response_header_timeout_seconds"] = int64(math.Ceil(s.Timeout.Seconds()))
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
