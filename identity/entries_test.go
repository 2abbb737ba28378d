package identity

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/attestor"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

func TestParseEntries(t *testing.T) {
	in := `entries:
  - spiffe_id: spiffe://example.org/ns/demo/sa/frontend
    selectors: ["unix:uid:1102", "unix:path:/usr/local/bin/envoy"]
    x509_ttl: 30m
    dns_names: [frontend.demo]
  - spiffe_id: spiffe://example.org/ns/demo/sa/backend
    selectors: ["unix:uid:1101"]
`
	entries, err := ParseEntries("entries.yaml", []byte(in), td)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("got %d entries", len(entries))
	}
	fe := entries[0]
	if fe.SPIFFEID.String() != "spiffe://example.org/ns/demo/sa/frontend" || fe.X509TTL != 30*time.Minute ||
		len(fe.Selectors) != 2 || fe.DNSNames[0] != "frontend.demo" || fe.Source != "entries.yaml:2" {
		t.Errorf("entry 0 = %+v", fe)
	}
	if entries[1].Source != "entries.yaml:6" {
		t.Errorf("entry 1 source = %q", entries[1].Source)
	}
}

// TestParseEntriesTTLFloors: a TTL at its floor is taken as written, and an
// absent one (zero) leaves the daemon's default.
func TestParseEntriesTTLFloors(t *testing.T) {
	in := `entries:
  - spiffe_id: spiffe://example.org/at-floor
    selectors: ["unix:uid:1"]
    x509_ttl: 10s
    jwt_ttl: 30s
  - spiffe_id: spiffe://example.org/defaults
    selectors: ["unix:uid:2"]
`
	entries, err := ParseEntries("entries.yaml", []byte(in), td)
	if err != nil {
		t.Fatal(err)
	}
	if got := entries[0]; got.X509TTL != MinX509TTL || got.JWTTTL != MinJWTTTL {
		t.Errorf("entry at the floors has x509_ttl %s, jwt_ttl %s; want %s, %s", got.X509TTL, got.JWTTTL, MinX509TTL, MinJWTTTL)
	}
	if got := entries[1]; got.X509TTL != 0 || got.JWTTTL != 0 {
		t.Errorf("entry without TTLs has x509_ttl %s, jwt_ttl %s; want 0 (the daemon's defaults)", got.X509TTL, got.JWTTTL)
	}
}

func TestParseEntriesRejectsBadInputWithFileAndLine(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"bad spiffe id", "entries:\n  - spiffe_id: spiffe://example.org/a//b\n    selectors: [\"unix:uid:1\"]\n",
			[]string{"entries.yaml:2: spiffe_id \"spiffe://example.org/a//b\""}},
		{"not a spiffe id", "entries:\n  - spiffe_id: https://example.org/a\n    selectors: [\"unix:uid:1\"]\n",
			[]string{"entries.yaml:2: spiffe_id"}},
		{"foreign trust domain", "entries:\n  - spiffe_id: spiffe://evil.org/a\n    selectors: [\"unix:uid:1\"]\n",
			[]string{"entries.yaml:2: spiffe_id \"spiffe://evil.org/a\" is outside the trust domain \"example.org\""}},
		{"trust domain id", "entries:\n  - spiffe_id: spiffe://example.org\n    selectors: [\"unix:uid:1\"]\n",
			[]string{"entries.yaml:2:", "add a path"}},
		{"no selectors", "entries:\n  - spiffe_id: spiffe://example.org/a\n",
			[]string{"entries.yaml:2: entry \"spiffe://example.org/a\" has no selectors"}},
		{"missing id", "entries:\n  - selectors: [\"unix:uid:1\"]\n", []string{"entries.yaml:2: entry has no spiffe_id"}},
		{"bad selector on its own line", "entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors:\n      - unix:uid:1\n      - unix:uid\n",
			[]string{"entries.yaml:5: selector \"unix:uid\" has no value"}},
		{"unknown selector type", "entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"nsa:clearance:top\"]\n",
			[]string{"entries.yaml:3:", "unknown type \"nsa\""}},
		{"unknown key", "entries:\n  - spiffe_id: spiffe://example.org/a\n    selector: [\"unix:uid:1\"]\n",
			[]string{"entries.yaml:3: unknown key \"selector\""}},
		{"duplicate", "entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:uid:1\", \"unix:gid:2\"]\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:gid:2\", \"unix:uid:1\"]\n",
			[]string{"entries.yaml:4: entry \"spiffe://example.org/a\" duplicates the one at entries.yaml:2"}},
		{"issue 13: x509_ttl of 1ns", "entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:uid:1\"]\n    x509_ttl: 1ns\n",
			[]string{"entries.yaml:4: x509_ttl 1ns is shorter than the minimum 10s"}},
		{"x509_ttl just below the floor", "entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:uid:1\"]\n    x509_ttl: 9.999s\n",
			[]string{"entries.yaml:4: x509_ttl 9.999s is shorter than the minimum 10s"}},
		{"negative x509_ttl", "entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:uid:1\"]\n    x509_ttl: -1h\n",
			[]string{"entries.yaml:4: x509_ttl -1h0m0s is shorter than the minimum 10s"}},
		{"short jwt_ttl", "entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:uid:1\"]\n    jwt_ttl: 29s\n",
			[]string{"entries.yaml:4: jwt_ttl 29s is shorter than the minimum 30s"}},
		{"both ttls short, both reported", "entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:uid:1\"]\n    x509_ttl: 1ms\n    jwt_ttl: 1ms\n",
			[]string{"entries.yaml:4: x509_ttl 1ms", "entries.yaml:5: jwt_ttl 1ms"}},
		{"every problem reported", "entries:\n  - spiffe_id: spiffe://evil.org/a\n    selectors: [\"unix:uid:1\"]\n  - spiffe_id: spiffe://example.org/b\n",
			[]string{"entries.yaml:2:", "entries.yaml:4:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseEntries("entries.yaml", []byte(tt.in), td)
			if err == nil {
				t.Fatal("bad entries accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestEntryMatchesNeedsEverySelector(t *testing.T) {
	e := Entry{Selectors: sels(t, "unix:uid:1", "unix:path:/bin/envoy")}
	tests := []struct {
		have []attestor.Selector
		want bool
	}{
		{sels(t, "unix:uid:1", "unix:gid:1", "unix:path:/bin/envoy"), true},
		{sels(t, "unix:uid:1", "unix:gid:1"), false},
		{sels(t, "unix:uid:2", "unix:path:/bin/envoy"), false},
		{nil, false},
	}
	for _, tt := range tests {
		if got := e.Matches(tt.have); got != tt.want {
			t.Errorf("Matches(%v) = %v, want %v", tt.have, got, tt.want)
		}
	}
}

func sels(t *testing.T, in ...string) []attestor.Selector {
	t.Helper()
	out := make([]attestor.Selector, len(in))
	for i, s := range in {
		sel, err := attestor.ParseSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = sel
	}
	return out
}
