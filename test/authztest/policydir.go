package authztest

import (
	"os"
	"path/filepath"
	"testing"
)

// HelloPolicy allows GET and HEAD of /hello (the methods come from
// HelloData) and answers /private with a 401 and a body: a policy with a
// boolean and an object result, for the tests of meshid's wiring of authz.
const (
	HelloPolicy = `package envoy.authz

default allow := false

allow if {
	input.attributes.request.http.method in data.methods
	input.parsed_path == ["hello"]
}

allow := {"allowed": false, "http_status": 401, "body": "who?"} if input.parsed_path == ["private"]
`
	HelloData = `{"methods": ["GET", "HEAD"]}`
)

// PolicyDir writes a policy directory (file name → content, names may
// have subdirectories) and returns its path.
func PolicyDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
