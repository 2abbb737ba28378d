package decisionlog

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"
)

// File is a decision log file that rotates by size: before a line
// that would take it past MaxBytes, decisions.jsonl becomes
// decisions.jsonl.1 (.1 becomes .2, and so on; the one past MaxFiles is
// removed) and a new decisions.jsonl is started. Lines are never split
// between two files, so every file is whole JSON lines; a single line
// longer than MaxBytes gets a file of its own.
//
// It is written by Log.Run alone, whose writes are whole lines,
// and is not safe for concurrent use. Rotating is a few renames on the
// writing goroutine: Checks only ever queue.
type File struct {
	path     string
	maxBytes int64 // 0: never rotate
	maxFiles int
	log      *slog.Logger
	f        *os.File // nil when it could not be reopened
	size     int64
	stuck    bool // the last rotation failed
	rotated  uint64
}

// FileOptions say when a File rotates and how many old files it keeps.
type FileOptions struct {
	// MaxBytes is the size past which the file is rotated; zero never
	// rotates.
	MaxBytes int64
	// MaxFiles is how many rotated files (path.1 to path.MaxFiles) are
	// kept; at least 1 when MaxBytes is set.
	MaxFiles int
	// Log reports rotations that fail; nil discards.
	Log *slog.Logger
}

// OpenFile opens path for appending, creating it (mode 0640) if it does
// not exist; its directory must.
func OpenFile(path string, o FileOptions) (*File, error) {
	if o.MaxBytes < 0 || o.MaxBytes > 0 && o.MaxFiles < 1 {
		return nil, fmt.Errorf("decision log %s: rotating at %d bytes keeping %d files: want a size of 0 (never) or more, and at least 1 file to keep", path, o.MaxBytes, o.MaxFiles)
	}
	l := &File{path: path, maxBytes: o.MaxBytes, maxFiles: o.MaxFiles, log: o.Log}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *File) open() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	l.f, l.size = f, info.Size()
	return nil
}

// Write appends p, which must be whole lines, rotating the file before
// each line that would take it past MaxBytes. A rotation that fails
// (a rename refused) is logged and the lines go on into the file as it
// is, past MaxBytes, until a later rotation works: a full file is better
// than lost decisions.
func (l *File) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		if l.f == nil {
			if err := l.open(); err != nil {
				return written, err
			}
		}
		n := l.fits(p)
		if n == 0 && l.size > 0 {
			err := l.rotate()
			switch {
			case err != nil && l.f == nil:
				return written, err
			case err != nil:
				if !l.stuck {
					l.log.Error("authz: cannot rotate the decision log; it grows past decision_log_max_bytes until it can", "path", l.path, "err", err)
					l.stuck = true
				}
				n = len(p)
			case l.stuck:
				l.log.Info("authz: decision log rotates again", "path", l.path)
				l.stuck = false
			}
			if err == nil {
				n = l.fits(p)
			}
		}
		if n == 0 {
			// An empty file takes at least one line, however long.
			n = lineEnd(p)
		}
		m, err := l.f.Write(p[:n])
		l.size += int64(m)
		written += m
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// fits is how many bytes of the whole lines at the start of p fit in the
// file before MaxBytes.
func (l *File) fits(p []byte) int {
	if l.maxBytes == 0 {
		return len(p)
	}
	room := l.maxBytes - l.size
	if room <= 0 {
		return 0
	}
	if int64(len(p)) <= room {
		return len(p)
	}
	return bytes.LastIndexByte(p[:room], '\n') + 1
}

// lineEnd is the length of p's first line, its newline included.
func lineEnd(p []byte) int {
	if i := bytes.IndexByte(p, '\n'); i >= 0 {
		return i + 1
	}
	return len(p)
}

// rotate shifts path.N-1 to path.N down to path to path.1, dropping the
// oldest, and starts path afresh. When a rename fails, path is reopened
// as it is and the error returned; l.f is nil only when path cannot be
// opened at all.
func (l *File) rotate() error {
	err := l.f.Close()
	l.f = nil
	for i := l.maxFiles - 1; i >= 1 && err == nil; i-- {
		if err = os.Rename(fmt.Sprintf("%s.%d", l.path, i), fmt.Sprintf("%s.%d", l.path, i+1)); errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	}
	if err == nil {
		// Gone already (removed by hand): nothing to keep.
		if err = os.Rename(l.path, l.path+".1"); errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
	}
	if openErr := l.open(); openErr != nil {
		err = errors.Join(err, openErr)
	}
	if err != nil {
		return fmt.Errorf("rotate %s: %w", l.path, err)
	}
	l.rotated++
	return nil
}

// Rotations counts the rotations so far.
func (l *File) Rotations() uint64 { return l.rotated }

// OldestLine is the time of the first line of the oldest file kept
// (path.MaxFiles down to path); false when no file has a line.
func (l *File) OldestLine() (time.Time, bool) {
	for i := l.maxFiles; i >= 0; i-- {
		if t, ok := FirstLineTime(RotatedPath(l.path, i)); ok {
			return t, true
		}
	}
	return time.Time{}, false
}

// Close closes the file.
func (l *File) Close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
