package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPeerFromXFCC(t *testing.T) {
	tests := []struct {
		name, header, want string
	}{
		{"empty", "", ""},
		{"envoy set", "By=spiffe://example.org/b;Hash=abcd;URI=spiffe://example.org/f", "spiffe://example.org/f"},
		{"lower-case key", "hash=ab;uri=spiffe://example.org/f", "spiffe://example.org/f"},
		{"no URI", "By=spiffe://example.org/b;Hash=abcd", ""},
		{"last element wins", "URI=spiffe://example.org/old,URI=spiffe://example.org/new", "spiffe://example.org/new"},
		{
			"quoted subject with separators",
			`Hash=ab;Subject="CN=x,O=y;z \"q\"";URI=spiffe://example.org/f`,
			"spiffe://example.org/f",
		},
		{"quoted URI", `URI="spiffe://example.org/f"`, "spiffe://example.org/f"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := peerFromXFCC(tt.header); got != tt.want {
				t.Errorf("peerFromXFCC(%q) = %q, want %q", tt.header, got, tt.want)
			}
		})
	}
}

func TestBackend(t *testing.T) {
	h := mustHandler(t, "backend", "")
	req := httptest.NewRequest(http.MethodPost, "/any/path?x=1", nil)
	req.Header.Set("X-Forwarded-Client-Cert", "By=spiffe://example.org/b;URI=spiffe://example.org/f")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)

	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, want 200", rec.Code)
	}
	var got echo
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	want := echo{Service: "backend", Method: "POST", Path: "/any/path", Peer: "spiffe://example.org/f"}
	if got != want {
		t.Errorf("echo = %+v, want %+v", got, want)
	}
}

func TestFrontend(t *testing.T) {
	var gotURI string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotURI = r.URL.RequestURI()
		if r.URL.Path == "/admin" {
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, "denied by policy")
			return
		}
		io.WriteString(w, "hello from upstream")
	}))
	defer upstream.Close()
	h := mustHandler(t, "frontend", upstream.URL)

	tests := []struct {
		method, path string
		wantStatus   int
		wantBody     string // substring
		wantUpstream string // "" = upstream not called
	}{
		{"GET", "/call/hello?a=b&c=d", 200, "hello from upstream", "/hello?a=b&c=d"},
		{"GET", "/call/deep/path", 200, "hello from upstream", "/deep/path"},
		{"GET", "/call/admin", 403, "denied by policy", "/admin"},
		{"GET", "/healthz", 200, "ok", ""},
		{"GET", "/hello", 404, "", ""},
		{"POST", "/call/hello", 405, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			gotURI = ""
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d (body %q)", rec.Code, tt.wantStatus, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("body = %q, want it to contain %q", rec.Body, tt.wantBody)
			}
			if gotURI != tt.wantUpstream {
				t.Errorf("upstream saw %q, want %q", gotURI, tt.wantUpstream)
			}
		})
	}
}

func TestFrontendUpstreamDown(t *testing.T) {
	down := httptest.NewServer(http.NotFoundHandler())
	url := down.URL
	down.Close()

	rec := httptest.NewRecorder()
	mustHandler(t, "frontend", url).ServeHTTP(rec, httptest.NewRequest("GET", "/call/hello", nil))
	if rec.Code != http.StatusBadGateway {
		t.Errorf("status = %d, want 502", rec.Code)
	}
}

func TestBadUpstream(t *testing.T) {
	if _, err := newHandler("frontend", "127.0.0.1:80", nil, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("newHandler accepted an upstream without a scheme")
	}
}

func mustHandler(t *testing.T, name, upstream string) http.Handler {
	t.Helper()
	h, err := newHandler(name, upstream, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestRoutes: with -route a service forwards /call/NAME/... to that route
// and echoes everything else, as the middle of a chain does.
func TestRoutes(t *testing.T) {
	var gotURI, gotHost string
	db := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotURI, gotHost = r.URL.RequestURI(), r.Host
		io.WriteString(w, "hello from db")
	}))
	defer db.Close()
	h, err := newHandler("api", "", []string{"db=" + db.URL}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path, wantBody, wantUpstream string
		wantStatus                   int
	}{
		{"/call/db/rows?n=1", "hello from db", "/rows?n=1", 200},
		{"/hello", `"service":"api"`, "", 200},
		{"/call/cache/x", `"service":"api"`, "", 200},
	}
	for _, tt := range tests {
		gotURI = ""
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", tt.path, nil))
		if rec.Code != tt.wantStatus || !strings.Contains(rec.Body.String(), tt.wantBody) || gotURI != tt.wantUpstream {
			t.Errorf("GET %s = %d %q, upstream saw %q; want %d %q, %q", tt.path, rec.Code, rec.Body, gotURI, tt.wantStatus, tt.wantBody, tt.wantUpstream)
		}
		if tt.wantUpstream != "" && gotHost != "db" {
			t.Errorf("GET %s reached the upstream with Host %q, want the route's name db", tt.path, gotHost)
		}
	}
	for _, bad := range [][]string{{"db"}, {"=http://x"}, {"a/b=http://x"}, {"db=127.0.0.1:80"}} {
		if _, err := newHandler("api", "", bad, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("newHandler accepted -route %q", bad)
		}
	}
	if _, err := newHandler("api", db.URL, []string{"db=" + db.URL}, slog.New(slog.DiscardHandler)); err == nil {
		t.Error("newHandler accepted -upstream with -route")
	}
}
