package input

import (
	"testing"

	"github.com/meshid/meshid/authz/input/internal/jsonterm"
)

// FuzzForm holds formTerm, which parses a form body within a budget, to
// url.ParseQuery (queryTerm, which parses the query of the path): the same
// refusals and the same document. The seeds run with go test.
func FuzzForm(f *testing.F) {
	for _, s := range []string{"", "a=1&b=x%20y&a=2", "a", "a=", "=1", "&&a=1&", "a=1;b=2", "a=%zz", "a%3Db=c", "%ff=1", "a=%ff", "a+b=c+d", "a=1&a=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		want, wantErr := queryTerm(body)
		got, err := formTerm(body, jsonterm.NewBudget(2, 1<<20, nil))
		switch {
		case wantErr != nil && err == nil:
			t.Fatalf("formTerm(%q) = %v; url.ParseQuery refuses it: %v", body, got, wantErr)
		case wantErr == nil && err != nil:
			t.Fatalf("formTerm(%q): %v; url.ParseQuery makes %v of it", body, err, want)
		case err == nil && got.String() != want.String():
			t.Fatalf("formTerm(%q) = %v, url.ParseQuery makes %v", body, got, want)
		}
	})
}
