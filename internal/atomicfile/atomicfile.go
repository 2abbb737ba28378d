// Package atomicfile writes files so that a reader, or a machine that loses
// power, sees the old content or the new and never a part. It is the one
// way meshid puts files on disk that others read: the helper's SVID files,
// the CA's generations and the test harness's config rewrites. It never
// decides what goes into a file or where.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces path with data, mode applied before the data lands: it
// writes a temporary file in the same directory, flushes it, renames it
// over path and flushes the directory, so the rename itself survives a
// crash. On failure nothing is left behind but the old file. Errors name
// path, never the temporary file, and say what to fix where they can.
func Write(path string, data []byte, mode os.FileMode) (err error) {
	dir, name := filepath.Dir(path), filepath.Base(path)
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w%s", path, unwrapPathError(err), hint(dir, err))
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes 0600; set the mode on the descriptor, before any
	// byte is written, so no reader ever finds the data under a looser one.
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPathError(err))
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPathError(err))
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPathError(err))
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPathError(err))
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: replace it: %w", path, unwrapPathError(err))
	}
	if err := SyncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// SyncDir flushes a directory, making the names created, renamed or
// removed in it durable. Call it after renaming something into dir.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if closeErr := d.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, unwrapPathError(err))
	}
	return nil
}

// unwrapPathError drops the file name from an error: the caller's message
// names the file the user asked for, not a scratch name.
func unwrapPathError(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

func hint(dir string, err error) string {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Sprintf(" (directory %s does not exist)", dir)
	case errors.Is(err, os.ErrPermission):
		return fmt.Sprintf(" (uid %d may not create files in %s; choose a directory it owns)", os.Getuid(), dir)
	}
	return ""
}
