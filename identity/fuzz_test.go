package identity

import (
	"strings"
	"testing"
)

// FuzzParseEntries: any file either loads into entries that each have an
// ID of the trust domain and at least one selector, or is refused with an
// error naming the file; lint never panics on it either.
func FuzzParseEntries(f *testing.F) {
	f.Add(sampleEntries)
	f.Add("entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:uid:1\"]\n    x509_ttl: 1h\n")
	f.Add("entries: [")
	f.Add("entries:\n  - {spiffe_id: spiffe://example.org/a, selectors: [\"docker:label:a:b\", \"k8s:ns:x\"]}\n")
	f.Fuzz(func(t *testing.T, in string) {
		entries, err := ParseEntries("entries.yaml", []byte(in), td)
		if err != nil {
			if !strings.Contains(err.Error(), "entries.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
		}
		for _, e := range entries {
			if !e.SPIFFEID.MemberOf(td) || len(e.Selectors) == 0 {
				t.Fatalf("loaded a bad entry %+v", e)
			}
		}
		LintEntries("entries.yaml", []byte(in), LintOptions{TrustDomain: td, Types: []string{"unix"}})
	})
}
