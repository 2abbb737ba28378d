package bodyterm

import (
	"net/url"
	"slices"
	"testing"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshid/meshid/authz/input/internal/jsonterm"
)

// FuzzForm holds formTerm, which parses a form body within a budget, to
// url.ParseQuery (which parses the query of the path for parsed_query):
// the same refusals, invalid UTF-8 included, and the same document. The
// seeds run with go test.
func FuzzForm(f *testing.F) {
	for _, s := range []string{"", "a=1&b=x%20y&a=2", "a", "a=", "=1", "&&a=1&", "a=1;b=2", "a=%zz", "a%3Db=c", "%ff=1", "a=%ff", "a+b=c+d", "a=1&a=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		values, wantErr := url.ParseQuery(body)
		invalid := func(s string) bool { return !utf8.ValidString(s) }
		for k, vs := range values {
			if wantErr == nil && (invalid(k) || slices.ContainsFunc(vs, invalid)) {
				wantErr = errInvalidUTF8
			}
		}
		got, err := formTerm(body, jsonterm.NewBudget(2, 1<<20, nil))
		switch {
		case wantErr != nil && err == nil:
			t.Fatalf("formTerm(%q) = %v; url.ParseQuery refuses it: %v", body, got, wantErr)
		case wantErr == nil && err != nil:
			t.Fatalf("formTerm(%q): %v; url.ParseQuery makes %v of it", body, err, values)
		case err != nil:
			return
		}
		want, err := ast.InterfaceToValue(map[string][]string(values))
		if err != nil {
			t.Fatal(err)
		}
		if got.Value.Compare(want) != 0 {
			t.Fatalf("formTerm(%q) = %v, url.ParseQuery makes %v", body, got, want)
		}
	})
}
