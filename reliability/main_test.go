//go:build reliability

package reliability

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the scenarios, prints the table of what they measured, and
// then requires every goroutine a scenario started to be gone.
func TestMain(m *testing.M) {
	code := m.Run()
	summary.print(os.Stdout)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// summary collects one row per scenario, in the order they ran.
var summary table

type table struct {
	mu   sync.Mutex
	rows []row
}

type row struct {
	scenario, asserts, figures string
	failed                     bool
}

// report adds a row for t's scenario: what it asserts and what it measured.
func report(t *testing.T, asserts, format string, args ...any) {
	t.Helper()
	figures := fmt.Sprintf(format, args...)
	t.Logf("figures: %s", figures)
	summary.mu.Lock()
	defer summary.mu.Unlock()
	summary.rows = append(summary.rows, row{scenario: t.Name(), asserts: asserts, figures: figures})
	i := len(summary.rows) - 1
	// t.Failed is only final once the test is over.
	t.Cleanup(func() {
		summary.mu.Lock()
		summary.rows[i].failed = t.Failed()
		summary.mu.Unlock()
	})
}

func (s *table) print(w *os.File) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.rows) == 0 {
		return
	}
	var b strings.Builder
	b.WriteString("\n=== reliability summary ===\n")
	for _, r := range s.rows {
		verdict := "ok  "
		if r.failed {
			verdict = "FAIL"
		}
		fmt.Fprintf(&b, "%s %s\n     asserts: %s\n     measured: %s\n", verdict, r.scenario, r.asserts, r.figures)
	}
	fmt.Fprint(w, b.String())
}
