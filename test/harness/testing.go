package harness

import (
	"os"
	"testing"
)

// ForTest returns an Env for an end-to-end test, closed by t.Cleanup.
//
// It skips the test unless it runs as root (workloads run under distinct
// uids), builds the binaries once per test binary unless $MESHID_BIN_DIR
// names prebuilt ones, logs progress through t.Logf, and when the test has
// failed prints the tail of every process's log and keeps Env.Dir.
func ForTest(t testing.TB) *Env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("e2e tests start workloads under distinct uids and need root; run `sudo make test`")
	}
	return forTest(t, Options{Logf: t.Logf})
}

// OpenBaoForTest starts an OpenBao (StartOpenBao) for a test of its own,
// as any uid and without meshid's binaries, in an Env closed by
// t.Cleanup that keeps the engine's log when the test fails.
func OpenBaoForTest(t testing.TB, o OpenBaoOptions) *OpenBao {
	t.Helper()
	e := forTest(t, Options{Logf: t.Logf, NoBinaries: true})
	b, err := e.StartOpenBao(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func forTest(t testing.TB, o Options) *Env {
	t.Helper()
	e, err := New(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			e.Fail()
			for _, p := range e.Processes() {
				t.Logf("--- %s (pid %d, %s): last 40 lines of %s ---\n%s",
					p.Name, p.Pid(), p.state(), p.LogPath, p.LogTail(40))
			}
		}
		if err := e.Close(); err != nil {
			t.Error(err)
		}
	})
	return e
}
