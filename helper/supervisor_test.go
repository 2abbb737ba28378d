package helper

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshid/meshid/test/syncbuf"
)

func startSh(t *testing.T, script string, grace time.Duration) (*supervisor, *syncbuf.Buffer) {
	t.Helper()
	log := &syncbuf.Buffer{}
	p := newSupervisor([]string{"sh", "-c", script}, nil, &syncbuf.Buffer{}, &syncbuf.Buffer{}, grace, slog.New(slog.NewTextHandler(log, nil)))
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.stop() })
	return p, log
}

func TestSupervisorExitStatus(t *testing.T) {
	tests := []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"kill -USR1 $$", 128 + int(syscall.SIGUSR1)},
	}
	for _, tt := range tests {
		t.Run(tt.script, func(t *testing.T) {
			p, _ := startSh(t, tt.script, time.Second)
			select {
			case <-p.exited():
			case <-time.After(10 * time.Second):
				t.Fatal("the program did not exit")
			}
			if got := p.exitStatus(); got != tt.want {
				t.Fatalf("status %d, want %d", got, tt.want)
			}
		})
	}
}

func TestSupervisorStop(t *testing.T) {
	tests := []struct {
		name    string
		script  string // writes $READY once its traps are set
		want    int
		wantLog string
	}{
		{"SIGTERM is forwarded", "trap 'exit 7' TERM", 7, ""},
		{"SIGKILL after the grace", "trap '' TERM", 128 + int(syscall.SIGKILL), "program ignored the signal; killing it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready := filepath.Join(t.TempDir(), "ready")
			p, log := startSh(t, tt.script+"; echo > "+ready+"; while :; do sleep 0.02; done", 200*time.Millisecond)
			waitFor(t, "the traps", func() bool { return fileExists(ready) })
			if got := p.stop(); got != tt.want {
				t.Fatalf("stop = %d, want %d", got, tt.want)
			}
			if !strings.Contains(log.String(), tt.wantLog) || (tt.wantLog == "" && strings.Contains(log.String(), "killing")) {
				t.Fatalf("log:\n%s", log.String())
			}
			// Stopping again, as a shutdown racing an exit would, just
			// reports the status.
			if got := p.stop(); got != tt.want {
				t.Fatalf("second stop = %d", got)
			}
		})
	}
}

func TestSupervisorSignal(t *testing.T) {
	dir := t.TempDir()
	count, ready := filepath.Join(dir, "hups"), filepath.Join(dir, "ready")
	p, _ := startSh(t, `n=0; trap 'n=$((n+1)); echo $n > "`+count+`.tmp"; mv "`+count+`.tmp" "`+count+`"' HUP; echo > `+ready+`; while :; do sleep 0.02; done`, time.Second)
	waitFor(t, "the trap", func() bool { return fileExists(ready) })
	for i := 1; i <= 2; i++ {
		if err := p.signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "SIGHUP "+strconv.Itoa(i), func() bool {
			b, _ := os.ReadFile(count)
			return strings.TrimSpace(string(b)) == strconv.Itoa(i)
		})
	}
	if p.pid() <= 0 || !p.started() {
		t.Fatalf("pid %d started %v", p.pid(), p.started())
	}
}

func TestSupervisorNotStarted(t *testing.T) {
	p := newSupervisor([]string{"/nonexistent/prog", "-x"}, nil, nil, nil, time.Second, slog.New(slog.DiscardHandler))
	if p.exited() != nil || p.started() || p.stop() != 0 || p.signal(syscall.SIGHUP) == nil {
		t.Fatal("a program never started looks started")
	}
	if err := p.start(); err == nil || !strings.Contains(err.Error(), "-cmd /nonexistent/prog: ") {
		t.Fatalf("start = %v", err)
	}
	if p.started() {
		t.Fatal("a program that failed to start counts as started")
	}
}
