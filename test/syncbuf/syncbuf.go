// Package syncbuf is a buffer that goroutines write and a test reads at
// the same time: the destination of a logger under test, or of a
// process's output.
package syncbuf

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer is a bytes.Buffer behind a mutex. The zero value is empty and
// ready to use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String is everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines are the lines written so far that hold substr (every line, for
// ""), each with its newline.
func (b *Buffer) Lines(substr string) []string {
	var out []string
	for line := range strings.Lines(b.String()) {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}
