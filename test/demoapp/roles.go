package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// backend answers every request with who was called and by whom.
type backend struct{ name string }

type echo struct {
	Service string `json:"service"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	// Peer is the caller's SPIFFE ID from x-forwarded-client-cert, "" when
	// the request did not come through a sidecar that verified a client cert.
	Peer string `json:"peer"`
}

func (b backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(echo{
		Service: b.name,
		Method:  r.Method,
		Path:    r.URL.Path,
		Peer:    peerFromXFCC(r.Header.Get("X-Forwarded-Client-Cert")),
	})
}

// frontend turns GET /call/<rest>?q into GET <upstream>/<rest>?q and relays
// the answer untouched, so a denial by the mesh reaches the caller as is.
type frontend struct {
	upstream *url.URL
	client   *http.Client
	// host, if set, is the request's Host header: a sidecar's outbound
	// listener with several upstreams routes by it.
	host string
}

func (f frontend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := *f.upstream
	target.Path = strings.TrimSuffix(target.Path, "/") + "/" + r.PathValue("rest")
	target.RawPath = ""
	target.RawQuery = r.URL.RawQuery

	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, target.String(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if f.host != "" {
		req.Host = f.host
	}
	resp, err := f.client.Do(req)
	if err != nil {
		http.Error(w, "upstream: "+err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	// The decision id lets whoever sees a 403 ask meshid why.
	for _, h := range []string{"Content-Type", "X-Meshid-Decision-Id"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// peerFromXFCC returns the URI field of the last element of an
// x-forwarded-client-cert header, the one added by the nearest proxy:
//
//	By=spiffe://td/backend;Hash=ab12;URI=spiffe://td/frontend
//
// Values may be double-quoted and then contain ',' ';' '=' and \" escapes.
func peerFromXFCC(h string) string {
	elements := splitUnquoted(h, ',')
	if len(elements) == 0 {
		return ""
	}
	for _, pair := range splitUnquoted(elements[len(elements)-1], ';') {
		key, value, ok := strings.Cut(pair, "=")
		if ok && strings.EqualFold(strings.TrimSpace(key), "URI") {
			return unquote(strings.TrimSpace(value))
		}
	}
	return ""
}

// splitUnquoted splits s at every sep that is not inside double quotes.
func splitUnquoted(s string, sep byte) []string {
	var parts []string
	inQuotes, start := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && inQuotes:
			i++ // skip the escaped character
		case s[i] == '"':
			inQuotes = !inQuotes
		case s[i] == sep && !inQuotes:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	if s != "" {
		parts = append(parts, s[start:])
	}
	return parts
}

func unquote(v string) string {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return v
	}
	var b strings.Builder
	for i := 1; i < len(v)-1; i++ {
		if v[i] == '\\' && i+1 < len(v)-1 {
			i++
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// logRequests logs one line per request; the e2e harness prints these when a
// test fails, so they say what was asked, by whom, and what was answered.
func logRequests(next http.Handler, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		log.Info("request", "method", r.Method, "uri", r.URL.RequestURI(), "status", sw.status,
			"peer", peerFromXFCC(r.Header.Get("X-Forwarded-Client-Cert")),
			"duration", time.Since(start).Round(time.Microsecond))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
