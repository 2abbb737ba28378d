package harness

import (
	"testing"

	"go.uber.org/goleak"
)

// Every process waiter and readiness poller must be gone
// when the tests end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
