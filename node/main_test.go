package node

import (
	"testing"

	"go.uber.org/goleak"
)

// Every part the node starts stops with it.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
