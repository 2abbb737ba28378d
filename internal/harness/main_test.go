package harness

import (
	"testing"

	"go.uber.org/goleak"
)

// Every process waiter, readiness poller and stand-in server must be gone
// when the tests end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
