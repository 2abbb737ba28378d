package authz

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// Activator is the one place the policy sources of a Server meet: it
// holds the latest good input of each (the policy dir as last loaded, each
// configured bundle as last verified and compiled) and compiles a change
// of one with the others into the Server's engine. The policy dir's watch
// (a Reloader from Reloader) and the bundle downloaders call it; it
// serializes them.
//
// Until every configured bundle has a copy, no engine is set, and the
// Server denies every request: a set without one of its bundles is not
// the policy anyone published.
type Activator struct {
	srv   *Server
	cfg   Config // its Bundles are unused: bundles holds them
	names []string
	log   *slog.Logger

	mu      sync.Mutex
	dir     *Policies         // nil when no policy dir is configured
	bundles map[string]Bundle // by name
}

// NewActivator compiles into srv the policy dir of cfg (if any) with the
// bundles named; it loads the policy dir now, and a dir that does not
// load is an error.
func NewActivator(srv *Server, cfg Config, bundles []string, log *slog.Logger) (*Activator, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg.Bundles = nil
	a := &Activator{srv: srv, cfg: cfg, names: slices.Clone(bundles), log: log, bundles: map[string]Bundle{}}
	if cfg.PolicyDir != "" {
		if a.dir, err = LoadPolicies(cfg.PolicyDir, cfg.regoVersion()); err != nil {
			return nil, err
		}
		if _, err := compileEngine(context.Background(), cfg, a.dir, false); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// CheckPolicyDir loads and compiles cfg's policy dir without the bundles
// it will be compiled with: the dir's own errors, before any bundle is
// there. The decision need not be defined yet.
func CheckPolicyDir(ctx context.Context, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	cfg.Bundles = nil
	dir, err := LoadPolicies(cfg.PolicyDir, cfg.regoVersion())
	if err != nil {
		return err
	}
	_, err = compileEngine(ctx, cfg, dir, false)
	return err
}

// Activate compiles b with the latest good of every other source and, if
// every configured bundle then has a copy, makes the result srv's engine.
// A b that does not compile with them is refused with the errors, and the
// last good stays.
func (a *Activator) Activate(ctx context.Context, b Bundle) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !slices.Contains(a.names, b.Name) {
		return fmt.Errorf("bundle %q is not configured", b.Name)
	}
	next := maps.Clone(a.bundles) // never nil: New makes a.bundles
	next[b.Name] = b
	if err := a.compile(ctx, a.dir, next); err != nil {
		return err
	}
	a.bundles = next
	return nil
}

// Pending names the configured bundles without a copy yet.
func (a *Activator) Pending() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, n := range a.names {
		if _, ok := a.bundles[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// reloadDir loads the policy dir again and compiles it with the bundles.
// It returns the number of .rego files of the dir.
func (a *Activator) reloadDir(ctx context.Context) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	dir, err := LoadPolicies(a.cfg.PolicyDir, a.cfg.regoVersion())
	if err != nil {
		return 0, err
	}
	if err := a.compile(ctx, dir, a.bundles); err != nil {
		return 0, err
	}
	a.dir = dir
	return len(dir.Modules), nil
}

// compile compiles dir with bundles and, when no configured bundle is
// missing, sets the engine; a.mu is held.
func (a *Activator) compile(ctx context.Context, dir *Policies, bundles map[string]Bundle) error {
	cfg := a.cfg
	complete := true
	for _, n := range a.names {
		if b, ok := bundles[n]; ok {
			cfg.Bundles = append(cfg.Bundles, b)
		} else {
			complete = false
		}
	}
	e, err := compileEngine(ctx, cfg, dir, complete)
	if err != nil {
		return err
	}
	if complete {
		a.srv.SetEngine(e)
	}
	return nil
}

// Reloader watches the activator's policy dir, as NewReloader does, and
// compiles each change with the bundles. The dir must be configured.
func (a *Activator) Reloader(interval time.Duration, log *slog.Logger) *Reloader {
	r := NewReloader(a.srv, a.cfg, interval, log)
	r.compile = a.reloadDir
	return r
}
