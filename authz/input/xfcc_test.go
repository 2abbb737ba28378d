package input

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseXFCC(t *testing.T) {
	tests := []struct {
		header string
		want   []xfccElement
		err    string
	}{
		{
			header: `By=spiffe://example.org/backend;Hash=ab12;URI=spiffe://example.org/frontend`,
			want:   []xfccElement{{"by": {"spiffe://example.org/backend"}, "hash": {"ab12"}, "uri": {"spiffe://example.org/frontend"}}},
		},
		{
			header: `By=spiffe://td/gw;URI=spiffe://td/client,By=spiffe://td/backend;Hash=x;URI=spiffe://td/gw`,
			want: []xfccElement{
				{"by": {"spiffe://td/gw"}, "uri": {"spiffe://td/client"}},
				{"by": {"spiffe://td/backend"}, "hash": {"x"}, "uri": {"spiffe://td/gw"}},
			},
		},
		{
			header: `Hash=x;Subject="CN=a, O=b;c=\"d\"";URI=spiffe://td/a;DNS=a.example;DNS=b.example`,
			want:   []xfccElement{{"hash": {"x"}, "subject": {`CN=a, O=b;c="d"`}, "uri": {"spiffe://td/a"}, "dns": {"a.example", "b.example"}}},
		},
		{header: `uri=spiffe://td/a, URI=spiffe://td/b`, want: []xfccElement{{"uri": {"spiffe://td/a"}}, {"uri": {"spiffe://td/b"}}}},
		{header: `By=;URI=`, want: []xfccElement{{"by": {""}, "uri": {""}}}},
		{header: ``, err: "want key=value"},
		{header: `URI`, err: "want key=value"},
		{header: `URI=a;`, err: "empty element at the end"},
		{header: `URI=a,`, err: "empty element at the end"},
		{header: `=a`, err: "bad key"},
		{header: `URI="unterminated`, err: "unterminated quoted value of uri"},
		{header: `URI="a"b`, err: "text after the quoted value of uri"},
		{header: `URI=a=b`, err: `unquoted value of uri contains '"' or '='`},
		{header: `URI=a"b`, err: `unquoted value of uri contains`},
		{header: `URI="a\`, err: "unterminated"},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			got, err := parseXFCC(tt.header)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parseXFCC = %v, %v; want an error containing %q", got, err, tt.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("parseXFCC = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestXFCCTrust(t *testing.T) {
	const (
		gw     = "spiffe://example.org/gateway"
		client = "spiffe://example.org/client"
	)
	header := "By=" + gw + ";URI=" + client
	tests := []struct {
		name         string
		trust        xfccTrust
		peer, header string
		want         string
		fromXFCC     bool
	}{
		{"no header", xfccTrust{}, gw, "", gw, false},
		{"any proxy", xfccTrust{}, "", header, client, true},
		{"trusted proxy", xfccTrust{proxies: map[string]bool{gw: true}}, gw, header, client, true},
		{"untrusted proxy", xfccTrust{proxies: map[string]bool{gw: true}}, "spiffe://example.org/other", header, "spiffe://example.org/other", false},
		{"no mTLS peer with proxies required", xfccTrust{proxies: map[string]bool{gw: true}}, "", header, "", false},
		{"malformed header", xfccTrust{}, gw, `URI="x`, "", true},
		{"no URI", xfccTrust{}, gw, "Hash=ab", "", true},
		{"two URIs", xfccTrust{}, gw, "URI=a;URI=b", "", true},
		{"last element wins", xfccTrust{}, gw, "URI=spiffe://example.org/a,URI=spiffe://example.org/b", "spiffe://example.org/b", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, from := tt.trust.source(tt.peer, tt.header)
			if got != tt.want || from != tt.fromXFCC {
				t.Errorf("source = %q, %v; want %q, %v", got, from, tt.want, tt.fromXFCC)
			}
		})
	}
}

// FuzzXFCC: any header parses or fails cleanly, and what parses has at
// least one element of non-empty keys.
func FuzzXFCC(f *testing.F) {
	for _, s := range []string{
		`By=spiffe://td/b;Hash=ab;URI=spiffe://td/a`,
		`Subject="CN=a, O=b;c=\"d\"";URI=spiffe://td/a,URI=x`,
		`URI="a\`, `=`, `,`, `a=b;;c=d`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		els, err := parseXFCC(h)
		if err != nil {
			return
		}
		if len(els) == 0 {
			t.Fatalf("parseXFCC(%q) = no elements, no error", h)
		}
		for _, el := range els {
			for k := range el {
				if k == "" || strings.ContainsAny(k, ",;\"") {
					t.Fatalf("parseXFCC(%q): bad key %q", h, k)
				}
			}
		}
	})
}
