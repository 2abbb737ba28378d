package identity

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// reloadState remembers what the entries file last held, good or bad, so
// that a file looked at again unchanged is neither re-applied nor logged
// again every few seconds.
type reloadState struct {
	mu   sync.Mutex
	seen string // digest of the file's bytes, "missing", or "" before the first look
}

// ReloadEntries reads the entries file and puts it in force if it is
// valid. An invalid or unreadable file is logged with file:line, counted
// in meshid_entries_reload_errors_total and returned; the entries in force
// stay. Unlike the watcher, it reloads even a file that did not change.
func (m *Manager) ReloadEntries() error { return m.reloadEntries(true) }

func (m *Manager) reloadEntries(force bool) error {
	m.reload.mu.Lock()
	defer m.reload.mu.Unlock()
	data, err := os.ReadFile(m.entriesFile)
	seen := "missing"
	if err == nil {
		seen = fmt.Sprintf("%x", sha256.Sum256(data))
	}
	if seen == m.reload.seen && !force {
		return nil
	}
	first := m.reload.seen == ""
	m.reload.seen = seen
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// Moving a file away and another in its place is a normal way to
		// update it; only say so, and keep serving.
		if !first || len(m.Entries()) > 0 {
			m.log.Warn("entries file does not exist: keeping the entries in force", "entries_file", m.entriesFile, "entries", len(m.Entries()))
		}
		return nil
	case err != nil:
		m.metrics.reloadErrors.Inc()
		m.log.Error("cannot read the entries file: keeping the entries in force", "entries_file", m.entriesFile, "err", err)
		return fmt.Errorf("read entries: %w", err)
	}
	entries, err := ParseEntries(m.entriesFile, data, m.trustDomain)
	if err == nil {
		err = CheckFederation(entries, m.federated)
	}
	if err != nil {
		m.metrics.reloadErrors.Inc()
		m.log.Error("entries file rejected: keeping the entries in force", "entries_file", m.entriesFile, "entries", len(m.Entries()), "err", err)
		return err
	}
	m.SetEntries(entries)
	m.metrics.reloads.Inc()
	m.log.Info("entries loaded", "entries_file", m.entriesFile, "entries", len(entries))
	return nil
}

// reloadDebounce lets a burst of change notices (an editor's truncate and
// write) settle into one reload.
const reloadDebounce = 100 * time.Millisecond

// WatchEntries keeps the entries in step with the entries file until ctx
// ends: on a change notice from the file system, every ReloadInterval in
// case a notice was missed (network file systems send none), and on every
// value from hup (SIGHUP), which reloads even an unchanged file.
func (m *Manager) WatchEntries(ctx context.Context, hup <-chan os.Signal) error {
	// The directory, not the file: updates that replace the file (rename
	// over it, Kubernetes' ConfigMap symlink swap) end a watch on the file.
	var events <-chan fsnotify.Event
	var errs <-chan error
	w, err := fsnotify.NewWatcher()
	if err == nil {
		err = w.Add(filepath.Dir(m.entriesFile))
	}
	if err != nil {
		m.log.Warn("cannot watch the entries file for changes: looking at it periodically only", "entries_file", m.entriesFile, "every", m.reloadInterval, "err", err)
	} else {
		events, errs = w.Events, w.Errors
	}
	if w != nil {
		defer w.Close()
	}
	// Whatever happened between the daemon reading the file and now.
	m.reloadEntries(false)

	tick := time.NewTicker(m.reloadInterval)
	defer tick.Stop()
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-events:
			if !ok {
				events = nil // the periodic look carries on alone
				continue
			}
			// Any name in the directory: a symlink swap renames neither the
			// file nor its target. Unchanged bytes cost one read.
			debounce.Reset(reloadDebounce)
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			m.log.Warn("entries file watch", "err", err)
		case <-debounce.C:
			m.reloadEntries(false)
		case <-tick.C:
			m.reloadEntries(false)
		case <-hup:
			m.log.Info("SIGHUP: reloading entries", "entries_file", m.entriesFile)
			m.reloadEntries(true)
		}
	}
}
