package node

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/internal/config"
)

// shippedEntries is one entries document the project ships: a file, or a
// key of a Kubernetes ConfigMap.
type shippedEntries struct {
	name string // file, or file#ConfigMap/key
	data []byte
	// config is the meshid.yaml shipped beside it, if any: a file in the
	// same directory, or a ConfigMap key in a manifest there.
	config []byte
}

var (
	entriesName = regexp.MustCompile(`^entries.*\.ya?ml$`)
	configName  = regexp.MustCompile(`^meshid.*\.ya?ml$`)
)

// findShipped walks the repository for entries documents. Test inputs
// (testdata) and what tools and builds put in the tree are not shipped.
func findShipped(t *testing.T, root string) []shippedEntries {
	t.Helper()
	type dirFiles struct{ entries, configs []shippedEntries }
	dirs := map[string]*dirFiles{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || slices.Contains([]string{"testdata", "bin", "dist", "node_modules"}, d.Name())) {
				return filepath.SkipDir
			}
			return nil
		}
		if ext := filepath.Ext(path); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		df := dirs[filepath.Dir(rel)]
		if df == nil {
			df = &dirFiles{}
			dirs[filepath.Dir(rel)] = df
		}
		switch base := filepath.Base(path); {
		case entriesName.MatchString(base):
			df.entries = append(df.entries, shippedEntries{name: rel, data: data})
		case configName.MatchString(base):
			df.configs = append(df.configs, shippedEntries{name: rel, data: data})
		}
		for _, cm := range configMaps(t, rel, data) {
			for _, key := range slices.Sorted(maps.Keys(cm.Data)) {
				doc := shippedEntries{name: rel + "#" + cm.Metadata.Name + "/" + key, data: []byte(cm.Data[key])}
				switch {
				case entriesName.MatchString(key):
					df.entries = append(df.entries, doc)
				case configName.MatchString(key):
					df.configs = append(df.configs, doc)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []shippedEntries
	for _, dir := range slices.Sorted(maps.Keys(dirs)) {
		df := dirs[dir]
		if len(df.configs) > 1 {
			t.Logf("%s: several meshid configs; linting against %s", dir, df.configs[0].name)
		}
		for _, e := range df.entries {
			if len(df.configs) > 0 {
				e.config = df.configs[0].data
			}
			out = append(out, e)
		}
	}
	return out
}

type configMap struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
}

// configMaps returns the ConfigMaps among the documents of a YAML file;
// a file that is not YAML at all is the concern of whatever reads it.
func configMaps(t *testing.T, name string, data []byte) []configMap {
	var out []configMap
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var cm configMap
		err := dec.Decode(&cm)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Logf("%s: not a YAML stream of manifests (%v): no ConfigMaps looked for", name, err)
			return out
		}
		if cm.Kind == "ConfigMap" {
			out = append(out, cm)
		}
	}
}

// TestShippedEntriesLintClean: every entries file the project ships (the
// compose mesh's, the Kubernetes ConfigMaps', the documented examples)
// passes `meshid entry lint` with no error-level finding, against the
// meshid.yaml shipped beside it (every attestor enabled when there is
// none).
func TestShippedEntriesLintClean(t *testing.T) {
	shipped := findShipped(t, "..")
	if !slices.ContainsFunc(shipped, func(s shippedEntries) bool { return s.name == filepath.Join("docs", "examples", "entries.yaml") }) {
		t.Fatalf("the documented example docs/examples/entries.yaml was not found among %d entries files: the search is broken", len(shipped))
	}
	for _, s := range shipped {
		t.Run(s.name, func(t *testing.T) {
			all := config.Default()
			all.Docker, all.K8s = &config.Docker{}, &config.K8s{}
			opts, err := LintOptions(all)
			if err != nil {
				t.Fatal(err)
			}
			if s.config != nil {
				path := filepath.Join(t.TempDir(), "meshid.yaml")
				if err := os.WriteFile(path, s.config, 0o600); err != nil {
					t.Fatal(err)
				}
				cfg, err := config.Load(path)
				if err != nil {
					t.Fatalf("the meshid config shipped beside it: %v", err)
				}
				if opts, err = LintOptions(cfg); err != nil {
					t.Fatal(err)
				}
			}
			findings := identity.LintEntries(s.name, s.data, opts)
			for _, f := range findings {
				t.Logf("%s: %s [%s] %s", f.Source, f.Level, f.Check, f.Message)
			}
			if n := identity.Errors(findings); n > 0 {
				t.Errorf("%d error-level findings", n)
			}
		})
	}
}
