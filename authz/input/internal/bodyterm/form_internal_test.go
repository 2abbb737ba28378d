package bodyterm

import (
	"net/url"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshid/meshid/authz/input/internal/jsonterm"
)

// FuzzForm holds formTerm, which parses a form body within a budget, to
// the plugin's way: url.ParseQuery, and ast.InterfaceToValue of the
// map, which goes through encoding/json and so repairs invalid UTF-8. The
// same refusals and the same document. The seeds run with go test.
func FuzzForm(f *testing.F) {
	for _, s := range []string{"", "a=1&b=x%20y&a=2", "a", "a=", "=1", "&&a=1&", "a=1;b=2", "a=%zz", "a%3Db=c", "%ff=1", "a=%ff", "a+b=c+d", "a=1&a=1", "%ff=1&%fe=2&%EF%BF%BD=3", "\xff=1&\xff\xff=2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		values, wantErr := url.ParseQuery(body)
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
		if got.Value.String() != want.String() {
			t.Fatalf("formTerm(%q) = %v, url.ParseQuery makes %v", body, got, want)
		}
	})
}
