//go:build dist

// Package dist tests what `make dist` built (mk/dist.mk): a static binary
// per platform, stamped with the version and commit, and their SHA-256
// sums; and that `go install github.com/meshid/meshid/cmd/meshid@VERSION`
// gives a binary that knows its version. `make dist-check` runs it, with
// DIST_DIR, DIST_VERSION and DIST_COMMIT; .ci/run calls that, `make test`
// does not (it builds everything twice more).
package dist

import (
	"archive/zip"
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func env(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run make dist-check", name)
	}
	return v
}

// platforms are what make dist builds, with the ELF machine of each.
var platforms = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

func TestDistBinaries(t *testing.T) {
	dir, version, commit := env(t, "DIST_DIR"), env(t, "DIST_VERSION"), env(t, "DIST_COMMIT")
	sums := readSums(t, filepath.Join(dir, "SHA256SUMS"))
	if len(sums) != len(platforms) {
		t.Errorf("SHA256SUMS has %d lines, want one per binary (%d)", len(sums), len(platforms))
	}
	if got, err := os.ReadFile(filepath.Join(dir, "VERSION")); err != nil || strings.TrimSpace(string(got)) != version {
		t.Errorf("dist/VERSION = %q, %v; want %s", got, err, version)
	}
	for arch, machine := range platforms {
		name := "meshid-linux-" + arch
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if sums[name] != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: SHA256SUMS says %q, the file is %x", name, sums[name], sum)
		}
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if f.Machine != machine || f.Class != elf.ELFCLASS64 {
			t.Errorf("%s: ELF machine %v class %v, want %v 64-bit", name, f.Machine, f.Class, machine)
		}
		// Static: no program interpreter, no shared libraries to load.
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s: has %v: not a static binary", name, p.Type)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s: needs %v", name, libs)
		}
		f.Close()
		if !bytes.Contains(data, []byte(version)) || !bytes.Contains(data, []byte(commit)) {
			t.Errorf("%s: version %s or commit %s not stamped in", name, version, commit)
		}
		t.Logf("%s: %d bytes, static %v, sha256 %x", name, len(data), machine, sum[:8])
	}

	// The one this machine runs prints what was stamped, every spelling.
	host := filepath.Join(dir, "meshid-linux-"+runtime.GOARCH)
	want := fmt.Sprintf("meshid %s\ncommit %s\ngo     %s linux/%s\n", version, commit, runtime.Version(), runtime.GOARCH)
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		out, err := exec.CommandContext(t.Context(), host, args...).CombinedOutput()
		if err != nil || string(out) != want {
			t.Errorf("%s %s: %v\n%s\nwant:\n%s", host, strings.Join(args, " "), err, out, want)
		}
	}
}

// readSums reads sha256sum's output: "HEX  NAME" per line.
func readSums(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sums := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("%s: %q is not sha256sum output", path, sc.Text())
		}
		sums[name] = sum
	}
	return sums
}

// TestVersionOfAModuleInstall is `go install
// github.com/meshid/meshid/cmd/meshid@VERSION` from a module proxy: here a
// file:// one holding this tree at a version of its own, since the real
// one cannot be asked for a version that was never tagged. The binary must
// say the module's version, which only Go's build info carries. The
// version is new each run (the module cache never forgets one), and the
// module cache loses it again afterwards.
func TestVersionOfAModuleInstall(t *testing.T) {
	version := fmt.Sprintf("v0.0.0-test.%d", time.Now().UnixNano())
	proxy := t.TempDir()
	writeModuleToProxy(t, proxy, "github.com/meshid/meshid", version, "../..")
	modcache, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { forgetModule(t, strings.TrimSpace(string(modcache)), "github.com/meshid/meshid", version) })
	gobin := t.TempDir()
	install := exec.CommandContext(t.Context(), "go", "install", "github.com/meshid/meshid/cmd/meshid@"+version)
	install.Env = append(os.Environ(), "GOBIN="+gobin, "GOPROXY=file://"+proxy,
		// Tests have no network: dependencies come from the module cache,
		// checked against the go.sum in the module, not the checksum database.
		"GOSUMDB=off", "GOFLAGS=", "GOTOOLCHAIN=local")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("go install: %v\n%s", err, out)
	}
	out, err := exec.CommandContext(t.Context(), filepath.Join(gobin, "meshid"), "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "meshid "+version+"\n") {
		t.Fatalf("meshid version: %v\n%s\nwant the module version %s", err, out, version)
	}
	t.Logf("go install ...@%s; meshid version:\n%s", version, out)
}

// writeModuleToProxy lays out module path at version in a GOPROXY
// directory, from the source files under dir as they are now.
func writeModuleToProxy(t *testing.T, proxy, path, version, dir string) {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "bin" || d.Name() == "dist" || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			// A directory with a go.mod of its own (tools/kube, tools/etcd)
			// is another module: a module zip leaves it out, as the proxy's
			// do, and the go command refuses a zip that holds one.
			if _, err := os.Stat(filepath.Join(p, "go.mod")); rel != "." && err == nil {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasSuffix(p, ".test") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		w, err := zw.Create(path + "@" + version + "/" + filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	})
	if err == nil {
		err = zw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	at := filepath.Join(proxy, path, "@v")
	if err := os.MkdirAll(at, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		version + ".zip":  buf.Bytes(),
		version + ".mod":  gomod,
		version + ".info": fmt.Appendf(nil, `{"Version":%q}`, version),
		"list":            []byte(version + "\n"),
	} {
		if err := os.WriteFile(filepath.Join(at, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// forgetModule removes one version of a module from the module cache,
// whose files Go makes read-only.
func forgetModule(t *testing.T, modcache, path, version string) {
	extracted := filepath.Join(modcache, path+"@"+version)
	filepath.WalkDir(extracted, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	if err := os.RemoveAll(extracted); err != nil {
		t.Error(err)
	}
	at := filepath.Join(modcache, "cache", "download", path, "@v")
	downloads, _ := filepath.Glob(filepath.Join(at, version+".*"))
	for _, f := range append(downloads, filepath.Join(at, "list")) {
		os.Remove(f)
	}
	// The directories the module's path made, up to the first that holds
	// something else (os.Remove keeps a directory that is not empty).
	for _, top := range []struct{ from, root string }{{at, filepath.Join(modcache, "cache", "download")}, {filepath.Dir(extracted), modcache}} {
		for d := top.from; d != top.root && os.Remove(d) == nil; d = filepath.Dir(d) {
		}
	}
}
