package authz

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// reloadSettle is how long the policy dir must be quiet before it is
// compiled: an editor or `kubectl cp` writes several files in a burst.
const reloadSettle = 100 * time.Millisecond

// Reloader recompiles the policies when the policy dir changes and gives
// each policy set that compiles to a Server. One that does not compile is
// logged with every error as file:line:col and counted; the Server keeps
// deciding with the last good one, so a typo never opens or closes the mesh.
//
// It watches the directory tree (fsnotify) and, as a backstop for file
// systems that send no events, compares the tree's fingerprint every
// Interval. A Kubernetes ConfigMap mount changes by swapping a symlink,
// which both notice.
type Reloader struct {
	srv      *Server
	cfg      Config
	interval time.Duration
	log      *slog.Logger

	last    string // fingerprint of the tree last compiled or tried
	lastErr string // the last failure, logged once
	// compile compiles the dir and puts the result in use, returning the
	// number of .rego files compiled: compileDir, or an Activator's.
	compile func(context.Context) (int, error)
}

// NewReloader reloads cfg's policy dir into srv. The tree as it is now is
// taken to be what srv's engine was compiled from. interval 0 relies on
// the file-system watch alone.
func NewReloader(srv *Server, cfg Config, interval time.Duration, log *slog.Logger) *Reloader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{srv: srv, cfg: cfg, interval: interval, log: log}
	r.compile = r.compileDir
	r.last, _ = fingerprint(cfg.PolicyDir)
	return r
}

// Run watches until ctx ends.
func (r *Reloader) Run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch policy dir: %w", err)
	}
	defer w.Close()
	r.watchTree(w)

	var tick <-chan time.Time
	if r.interval > 0 {
		t := time.NewTicker(r.interval)
		defer t.Stop()
		tick = t.C
	}
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			// The parent is watched for the policy dir itself only.
			if !r.inTree(ev.Name) {
				continue
			}
			r.log.Debug("authz: policy dir changed", "event", ev.String())
			settle.Reset(reloadSettle)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// An overflow loses events, not the next check: the
			// ticker (or the next event) still compares the tree.
			r.log.Warn("authz: watching the policy dir", "dir", r.cfg.PolicyDir, "err", err)
		case <-settle.C:
			r.watchTree(w)
			r.Check(ctx)
		case <-tick:
			r.watchTree(w)
			r.Check(ctx)
		}
	}
}

// Check compiles the policy dir if it changed since the last check and
// swaps the result in when it compiles. It reports whether a new policy
// set is in use.
func (r *Reloader) Check(ctx context.Context) bool {
	fp, err := fingerprint(r.cfg.PolicyDir)
	if err != nil {
		// The same unreadable tree is not retried on every tick.
		fp = "unreadable: " + err.Error()
	}
	if fp == r.last {
		return false
	}
	r.last = fp
	if err == nil {
		var files int
		if files, err = r.compile(ctx); err == nil {
			r.lastErr = ""
			r.log.Info("authz: policies reloaded", "dir", r.cfg.PolicyDir, "rego_files", files)
			return true
		}
	}
	r.srv.metrics.reloadErrors.Inc()
	if msg := err.Error(); msg != r.lastErr {
		r.lastErr = msg
		r.log.Error("authz: policy reload failed; still deciding with the last policies that compiled", "dir", r.cfg.PolicyDir, "err", err)
	}
	return false
}

// compileDir compiles the policy dir alone into the server.
func (r *Reloader) compileDir(ctx context.Context) (int, error) {
	e, err := NewEngine(ctx, r.cfg)
	if err != nil {
		return 0, err
	}
	r.srv.SetEngine(e)
	return e.files, nil
}

// watchTree watches every directory of the tree; fsnotify watches are not
// recursive, and directories come and go. Adding a watched one again is a
// no-op. The policy dir's parent is watched too, so that removing and
// recreating the dir itself is seen.
func (r *Reloader) watchTree(w *fsnotify.Watcher) {
	dir := r.cfg.PolicyDir
	_ = w.Add(filepath.Dir(dir))
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil //nolint:nilerr // an unreadable entry is skipped: the periodic check still sees the dir
		}
		if d.IsDir() || (d.Type()&fs.ModeSymlink != 0 && isDir(path)) {
			if err := w.Add(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				r.log.Warn("authz: cannot watch a policy directory; relying on the periodic check", "dir", path, "err", err)
			}
		}
		return nil
	})
}

func (r *Reloader) inTree(path string) bool {
	dir := filepath.Clean(r.cfg.PolicyDir)
	return path == dir || strings.HasPrefix(path, dir+string(filepath.Separator))
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// fingerprint sums the name, size and modification time of every file the
// engine would read (following symlinks, as reading does). Content
// changes that keep size and mtime are not seen: every editor and
// ConfigMap update changes one of them.
func fingerprint(dir string) (string, error) {
	var lines []string
	err := walkPolicyFiles(dir, func(path string) error {
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		lines = append(lines, fmt.Sprintf("%s\x00%d\x00%d", path, fi.Size(), fi.ModTime().UnixNano()))
		return nil
	})
	if err != nil {
		return "", err
	}
	slices.Sort(lines)
	sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
	return fmt.Sprintf("%x", sum), nil
}
