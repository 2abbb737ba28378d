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
	e, err := New(t.Context(), Options{Logf: t.Logf})
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
