package authz

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/util"
)

// Bundle is a verified OPA bundle compiled into a policy set, by the name
// meshid.yaml gives it. Where it came from and how it was verified are
// authz/bundles' business.
type Bundle struct {
	Name   string
	Bundle *bundle.Bundle
}

// Revision is the bundle's manifest revision.
func (b Bundle) Revision() string { return b.Bundle.Manifest.Revision }

// keptBundlesDir is where a policy set's files keep its bundles, by name:
// a directory a policy dir's walk skips (its name starts with "."), so
// that the files of a kept revision are a policy dir plus the bundles.
const keptBundlesDir = ".bundles"

// sources is a policy dir and bundles merged: every module by the name
// its errors carry, the data, the files a revision keeps.
type sources struct {
	modules   map[string]*ast.Module
	data      map[string]any
	files     map[string][]byte
	revisions map[string]string // bundle name → manifest revision; nil without bundles
}

// mergeSources checks the roots of cfg.Bundles against each other and the
// policy dir (dir, nil for none) and puts them together. A bundle's
// modules are named "<bundle>:<path in the bundle>".
func mergeSources(cfg Config, dir *Policies) (*sources, error) {
	s := &sources{modules: map[string]*ast.Module{}, data: map[string]any{}, files: map[string][]byte{}}
	if dir != nil {
		maps := copyMaps(dir.Data)
		s.data = maps
		for name, m := range dir.Modules {
			s.modules[name] = m
		}
		for name, f := range dir.Files {
			s.files[name] = f
		}
	}
	if len(cfg.Bundles) == 0 {
		return s, nil
	}
	if err := checkRoots(cfg.PolicyDir, dir, cfg.Bundles); err != nil {
		return nil, err
	}
	s.revisions = map[string]string{}
	var errs []error
	for _, b := range cfg.Bundles {
		s.revisions[b.Name] = b.Revision()
		kept := keptBundlesDir + "/" + b.Name
		for _, mf := range b.Bundle.Modules {
			rel := path.Clean("/" + filepath.ToSlash(mf.RelativePath))
			name := b.Name + ":" + rel
			version := cfg.regoVersion()
			if mf.Parsed != nil {
				// The version the reader parsed it at (the manifest's
				// rego_version, or the node's).
				if span := mf.Parsed.RegoVersionSpan(); !span.IsUndefined() {
					version = span.Min()
				}
			}
			// Parsed again to be named as meshid's errors name it; the
			// reader named it by the URL it came from.
			m, err := ast.ParseModuleWithOpts(name, string(mf.Raw), ast.ParserOptions{RegoVersion: version})
			if err != nil {
				errs = append(errs, located(err))
				continue
			}
			s.modules[name] = m
			s.files[kept+rel] = mf.Raw
		}
		if len(b.Bundle.Data) > 0 {
			if err := mergeData(s.data, b.Bundle.Data, nil); err != nil {
				errs = append(errs, fmt.Errorf("bundle %q: %w", b.Name, err))
			}
			raw, err := json.Marshal(b.Bundle.Data)
			if err != nil {
				return nil, fmt.Errorf("bundle %q: %w", b.Name, err)
			}
			s.files[kept+"/data.json"] = raw
		}
		manifest, err := json.Marshal(b.Bundle.Manifest)
		if err != nil {
			return nil, fmt.Errorf("bundle %q: %w", b.Name, err)
		}
		s.files[kept+"/"+bundle.ManifestExt] = manifest
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("rego files %s do not parse:\n%w", cfg.sourcesName(), errors.Join(errs...))
	}
	return s, nil
}

// sourcesName says where the policies of cfg are, for errors: "in DIR",
// "of bundle a", "in DIR and bundles a, b".
func (cfg Config) sourcesName() string {
	var names []string
	for _, b := range cfg.Bundles {
		names = append(names, b.Name)
	}
	var bundles string
	switch len(names) {
	case 0:
		return "in " + cfg.PolicyDir
	case 1:
		bundles = "bundle " + names[0]
	default:
		bundles = "bundles " + strings.Join(names, ", ")
	}
	if cfg.PolicyDir == "" {
		return "of " + bundles
	}
	return "in " + cfg.PolicyDir + " and " + bundles
}

// checkRoots refuses what OPA refuses when it activates bundles together:
// roots of two bundles that overlap (one contains the other), and, for
// the policy dir, which is no bundle and has no manifest, a package or a
// data path under (or above) a bundle's root.
func checkRoots(policyDir string, dir *Policies, bundles []Bundle) error {
	var errs []error
	for i, a := range bundles {
		for _, b := range bundles[i+1:] {
			for _, ra := range roots(a) {
				for _, rb := range roots(b) {
					if bundle.RootPathsOverlap(ra, rb) {
						errs = append(errs, fmt.Errorf("bundles %q and %q have overlapping roots %q and %q: a path of data belongs to one bundle only", a.Name, b.Name, ra, rb))
					}
				}
			}
		}
	}
	if dir == nil {
		return errors.Join(errs...)
	}
	type owned struct{ path, what, file string }
	var paths []owned
	for file, m := range dir.Modules {
		paths = append(paths, owned{refPath(m.Package.Path), "package " + strings.TrimPrefix(m.Package.Path.String(), "data."), file})
	}
	for rel, src := range dir.Files {
		if !slices.Contains(dataFiles, path.Base(rel)) {
			continue
		}
		var doc map[string]any
		if err := util.Unmarshal(src, &doc); err != nil {
			continue // LoadPolicies reported it
		}
		at := path.Dir(rel)
		for k := range doc {
			p := path.Join(at, k)
			if at == "." {
				p = k
			}
			paths = append(paths, owned{p, "data." + strings.ReplaceAll(p, "/", "."), filepath.Join(policyDir, filepath.FromSlash(rel))})
		}
	}
	slices.SortFunc(paths, func(a, b owned) int { return strings.Compare(a.file+a.path, b.file+b.path) })
	for _, b := range bundles {
		for _, r := range roots(b) {
			for _, p := range paths {
				if bundle.RootPathsOverlap(r, p.path) {
					errs = append(errs, fmt.Errorf("bundle %q root %q overlaps %s of %s: a path of data belongs to one source only", b.Name, r, p.what, p.file))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// roots are a bundle's manifest roots, OPA's default (all of data) when
// it names none.
func roots(b Bundle) []string {
	if b.Bundle.Manifest.Roots == nil {
		return []string{""}
	}
	return *b.Bundle.Manifest.Roots
}

// refPath is a package's path as a bundle root spells it: data.a.b is a/b.
func refPath(ref ast.Ref) string {
	var parts []string
	for _, t := range ref[1:] {
		if s, ok := t.Value.(ast.String); ok {
			parts = append(parts, string(s))
		} else {
			parts = append(parts, t.Value.String())
		}
	}
	return strings.Join(parts, "/")
}

// copyMaps copies the objects of a data document, so that merging into
// the copy leaves the original alone; other values are shared.
func copyMaps(src map[string]any) map[string]any {
	dst := make(map[string]any, len(src))
	for k, v := range src {
		if m, ok := v.(map[string]any); ok {
			v = copyMaps(m)
		}
		dst[k] = v
	}
	return dst
}

// mergeData merges src into dst; a key both define is an error unless
// both are objects. at is the path so far, for the message.
func mergeData(dst, src map[string]any, at []string) error {
	for k, v := range src {
		here := append(slices.Clip(at), k)
		old, taken := dst[k]
		if !taken {
			if m, ok := v.(map[string]any); ok {
				v = copyMaps(m)
			}
			dst[k] = v
			continue
		}
		om, ok1 := old.(map[string]any)
		nm, ok2 := v.(map[string]any)
		if !ok1 || !ok2 {
			return fmt.Errorf("data.%s is defined by another source too", strings.Join(here, "."))
		}
		if err := mergeData(om, nm, here); err != nil {
			return err
		}
	}
	return nil
}

// LoadKeptBundles reads the bundles a kept policy revision's files hold
// (dir/.bundles/<name>/), to replay a decision made with them; none when
// there is no such directory.
func LoadKeptBundles(dir string, version ast.RegoVersion) ([]Bundle, error) {
	entries, err := os.ReadDir(filepath.Join(dir, keptBundlesDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kept bundles: %w", err)
	}
	var out []Bundle
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		at := filepath.Join(dir, keptBundlesDir, e.Name())
		b, err := bundle.NewCustomReader(bundle.NewDirectoryLoader(at)).
			WithRegoVersion(version).WithSkipBundleVerification(true).Read()
		if err != nil {
			return nil, fmt.Errorf("kept bundle %s: %w", at, err)
		}
		out = append(out, Bundle{Name: e.Name(), Bundle: &b})
	}
	return out, nil
}
