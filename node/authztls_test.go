package node

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/test/authztest"
)

// TestAuthzServiceTLS serves both authz protocols over mutual TLS with
// meshid's own SVID and asks as callers with and without the right SVID.
func TestAuthzServiceTLS(t *testing.T) {
	serverID := spiffeid.RequireFromString("spiffe://example.org/meshid/authz")
	allowed := spiffeid.RequireFromString("spiffe://example.org/ns/demo/sa/backend")

	cfg := config.Default().Authz
	cfg.Address = freeTCPAddr(t)
	cfg.HTTPAddress = freeTCPAddr(t)
	cfg.PolicyDir = authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData})
	cfg.TLS = config.AuthzTLS{SPIFFEID: serverID.String(), ClientIDs: []string{allowed.String()}}
	s, authority := newTestAuthz(t, cfg, prometheus.NewRegistry())
	runAuthz(t, s)

	mint := func(id spiffeid.ID) *x509svid.SVID {
		svid, err := authority.MintX509SVID(ca.SVIDRequest{ID: id, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		return svid
	}
	// clientTLS is a caller holding svid (none if nil) that expects the
	// server to be serverWant.
	clientTLS := func(svid *x509svid.SVID, serverWant spiffeid.ID) *tls.Config {
		if svid == nil {
			return tlsconfig.TLSClientConfig(authority.X509Bundle(), tlsconfig.AuthorizeID(serverWant))
		}
		return tlsconfig.MTLSClientConfig(svid, authority.X509Bundle(), tlsconfig.AuthorizeID(serverWant))
	}
	check := func(tc *tls.Config) (codes.Code, error) {
		conn, err := grpc.NewClient(cfg.Address, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		callCtx, callCancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer callCancel()
		resp, err := authv3.NewAuthorizationClient(conn).Check(callCtx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/hello"}},
		}})
		if err != nil {
			return codes.Unknown, err
		}
		return codes.Code(resp.GetStatus().GetCode()), nil
	}
	get := func(tc *tls.Config) (int, error) {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}, Timeout: 5 * time.Second}
		resp, err := client.Get("https://" + cfg.HTTPAddress + "/hello")
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	good := mint(allowed)
	if code, err := check(clientTLS(good, serverID)); err != nil || code != codes.OK {
		t.Errorf("gRPC Check as %s: %v %v, want OK", allowed, code, err)
	}
	if status, err := get(clientTLS(good, serverID)); err != nil || status != 200 {
		t.Errorf("HTTP check as %s: %d %v, want 200", allowed, status, err)
	}

	other := mint(spiffeid.RequireFromString("spiffe://example.org/ns/demo/sa/frontend"))
	for name, tc := range map[string]*tls.Config{
		"an SVID not in client_ids": clientTLS(other, serverID),
		"no client certificate":     clientTLS(nil, serverID),
	} {
		if code, err := check(tc); err == nil {
			t.Errorf("gRPC Check with %s: %v, want the handshake refused", name, code)
		}
		if status, err := get(tc); err == nil {
			t.Errorf("HTTP check with %s: %d, want the handshake refused", name, status)
		}
	}

	// The caller can tell it reached meshid: a client expecting another
	// server ID refuses the server's certificate.
	if _, err := check(clientTLS(good, spiffeid.RequireFromString("spiffe://example.org/not-meshid"))); err == nil {
		t.Error("a client expecting another server ID accepted meshid's certificate")
	}

	// Plaintext callers get nothing.
	conn, err := grpc.NewClient(cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	callCtx, callCancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer callCancel()
	if _, err := authv3.NewAuthorizationClient(conn).Check(callCtx, &authv3.CheckRequest{}); err == nil {
		t.Error("a plaintext gRPC Check succeeded on the TLS listener")
	}
}
